"""Reading a suite's dataset in the layout its authors publish, one row at a time.

Three kinds of shard, all read lazily:

- `ParquetShard`: a parquet file of a Hugging Face dataset repository (``<subset>/<split>-00000-of-00001.parquet``),
  read with pyarrow: the text columns in batches, the audio column one row group at a time,
  only when a turn's audio is asked for;
- `TableShard`: a memory-mapped Arrow table, from ``datasets.load_from_disk`` (a ``save_to_disk``
  folder) or ``datasets.load_dataset`` (a hub id, cached by ``datasets``);
- `JsonlShard`: a JSONL file whose rows name audio files next to it (URO-Bench's ``test.jsonl``
  + wav folders, an ``audiofolder``'s ``metadata.jsonl``).

A suite builds its dialogues from the text columns only (`Stub`s); `LazyDialogues` turns a stub
into a `Dialogue` when the runner takes it, and only then decodes the row's audio (mono,
resampled to 16 kHz) into a WAV file of the cache folder, keyed by the shard's fingerprint and
the row, so no more than one row group of audio is in memory at a time and a second run reads
the WAV files back (see docs/architecture.md, "Suites").

Every problem with the data is a `TaskFileError` naming the file, the row and the column.
"""
from __future__ import annotations

import bisect
import hashlib
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, overload

from ..errors import MissingDependency, TaskFileError
from ..types import Dialogue, UserTurn

SAMPLE_RATE = 16000  # what recorded user turns are resampled to (VoiceBench casts to 16 kHz too)
BATCH_ROWS = 1024


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode("utf-8")).hexdigest()[:24]


def _file_fingerprint(path: Path) -> str:
    """Cheap and content-derived: name, size and the last 64 KiB (a parquet footer holds the
    schema and every row group's statistics), so a replaced file gets a new cache folder."""
    stat = path.stat()
    with open(path, "rb") as f:
        f.seek(max(0, stat.st_size - 65536))
        tail = hashlib.sha256(f.read()).hexdigest()
    return _digest(path.name, stat.st_size, tail)


class Shard(ABC):
    """Rows of one file (or table): text columns by iteration, audio by row."""

    path: Path
    num_rows: int
    fingerprint: str

    @property
    def base_dir(self) -> Path:
        """Where relative audio paths inside the rows are resolved."""
        return self.path.parent if self.path.suffix else self.path

    @abstractmethod
    def columns(self) -> list[str]:
        """The column names."""

    @abstractmethod
    def iter_rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        """Each row's values of `columns`, in order."""

    @abstractmethod
    def audio(self, index: int, column: str) -> Any:
        """Row `index`'s value of the audio column: {"bytes": …, "path": …} or a path."""

    def where(self, index: int) -> str:
        return f"{self.path} row {index}"


class ParquetShard(Shard):
    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:  # an extra that `make demo` does not install
            raise MissingDependency(f"{path}: reading a suite's parquet files needs pyarrow: "
                                    "pip install 'ivbench[suites]'") from None

        self.path = path
        try:
            self.file = pq.ParquetFile(str(path))
        except Exception as exc:  # pyarrow reports a bad file in several exception types
            raise TaskFileError(f"{path}: not a readable parquet file ({exc})") from None
        meta = self.file.metadata
        self.num_rows = meta.num_rows
        self._starts = [0]
        for g in range(meta.num_row_groups):
            self._starts.append(self._starts[-1] + meta.row_group(g).num_rows)
        self._group: Optional[tuple[int, str, Any]] = None  # (row group, column, its values)
        self.fingerprint = _file_fingerprint(path)

    def columns(self) -> list[str]:
        return list(self.file.schema_arrow.names)

    def iter_rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        for batch in self.file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield from batch.to_pylist()

    def audio(self, index: int, column: str) -> Any:
        group = bisect.bisect_right(self._starts, index) - 1
        if self._group is None or self._group[:2] != (group, column):
            # One row group's audio at a time: turns are taken in order, so each group is read once.
            self._group = (group, column, self.file.read_row_group(group, columns=[column]).column(0))
        return self._group[2][index - self._starts[group]].as_py()


class TableShard(Shard):
    """A `datasets.Dataset`'s Arrow table (memory-mapped: nothing is read until it is asked for)."""

    def __init__(self, dataset: Any, path: Path, fingerprint: str) -> None:
        if getattr(dataset, "_indices", None) is not None:
            dataset = dataset.flatten_indices()
        self.table = dataset.data.table
        self.path = path
        self.num_rows = self.table.num_rows
        self.fingerprint = _digest("datasets", fingerprint)

    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def iter_rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        for batch in self.table.select(columns).to_batches(max_chunksize=BATCH_ROWS):
            yield from batch.to_pylist()

    def audio(self, index: int, column: str) -> Any:
        return self.table.column(column)[index].as_py()


class JsonlShard(Shard):
    """A JSONL file; its audio columns hold file paths relative to it."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise TaskFileError(f"{path}: file not found")
        self.path = path
        self._rows: list[dict[str, Any]] = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TaskFileError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise TaskFileError(f"{path}:{line_no}: a row must be a JSON object")
                row["__line__"] = line_no
                self._rows.append(row)
        self.num_rows = len(self._rows)
        self.fingerprint = _file_fingerprint(path)

    def columns(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self._rows:
            names.update(dict.fromkeys(k for k in row if k != "__line__"))
        return list(names)

    def iter_rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            yield {**{c: row.get(c) for c in columns}, "__line__": row["__line__"]}

    def audio(self, index: int, column: str) -> Any:
        return self._rows[index].get(column)

    def where(self, index: int) -> str:
        return f"{self.path}:{self._rows[index]['__line__']}"


# -- finding the shards of a split ---------------------------------------------------------------


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MissingDependency("reading a dataset saved with save_to_disk or from the hub needs the "
                                "`datasets` package: pip install 'ivbench[suites]'") from None
    return datasets


def _from_disk(folder: Path, split: str) -> Shard:
    datasets = _datasets()
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises several types for a damaged folder
        raise TaskFileError(f"{folder}: cannot be read with datasets.load_from_disk ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise TaskFileError(f"{folder}: no split {split!r}; it has {', '.join(sorted(loaded))}")
        loaded = loaded[split]
    return TableShard(loaded, folder, str(getattr(loaded, "_fingerprint", folder)))


def disk_splits(folder: Path) -> list[str]:
    """The splits of a save_to_disk DatasetDict folder (from its dataset_dict.json)."""
    try:
        return list(json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskFileError(f"{folder / 'dataset_dict.json'}: unreadable ({exc})") from None


def parquet_splits(folder: Path) -> list[str]:
    """Split names of a hub repository's parquet files: ``<split>-00000-of-00002.parquet``."""
    names = {p.name.split("-", 1)[0] for p in folder.glob("*.parquet")}
    names |= {p.parent.name for p in folder.glob("*/*.parquet")}
    return sorted(names)


def local_splits(folder: Path) -> list[str]:
    if (folder / "dataset_dict.json").is_file():
        return disk_splits(folder)
    return parquet_splits(folder)


def open_split(folder: Path, split: str) -> list[Shard]:
    """The shards of one split of a dataset folder in any of the published layouts."""
    if (folder / "dataset_dict.json").is_file():
        return [_from_disk(folder, split)]
    if (folder / "state.json").is_file():  # a single Dataset saved with save_to_disk
        return [_from_disk(folder, split)]
    if (folder / split / "state.json").is_file():
        return [_from_disk(folder / split, split)]
    files = sorted(folder.glob(f"{split}-*.parquet")) + sorted(folder.glob(f"{split}.parquet"))
    files += sorted((folder / split).glob("*.parquet")) if (folder / split).is_dir() else []
    if not files:
        found = local_splits(folder)
        raise TaskFileError(f"{folder}: no split {split!r} (looked for {split}-*.parquet, {split}/*.parquet and "
                            f"a save_to_disk folder); splits there: {', '.join(found) or 'none'}")
    return [ParquetShard(f) for f in files]


def open_hub(repo_id: str, config: Optional[str], split: str) -> list[Shard]:
    """A dataset from the hub by id (cached by `datasets`; offline, only what is in its cache)."""
    datasets = _datasets()
    try:
        loaded = datasets.load_dataset(repo_id, config, split=split)
    except Exception as exc:  # network, missing config/split, corrupt cache: all the user's to fix
        raise TaskFileError(
            f"{repo_id}{'/' + config if config else ''} split {split!r}: cannot be loaded from the hub or the "
            f"datasets cache ({type(exc).__name__}: {str(exc)[:300]}). Offline, download it once where there is a "
            "network and give its folder as path=… (see the README, 'Suites')") from None
    loaded = loaded.cast_column(_audio_column(loaded), datasets.Audio(decode=False))
    return [TableShard(loaded, Path(repo_id), str(getattr(loaded, "_fingerprint", repo_id)))]


def _audio_column(dataset: Any) -> str:
    for name, feature in dataset.features.items():
        if type(feature).__name__ == "Audio":
            return str(name)
    return "audio"


def looks_like_hub_id(path: str) -> bool:
    return "/" in path and not path.startswith((".", "/", "~")) and not Path(path).exists() and path.count("/") == 1


# -- rows and their checks -----------------------------------------------------------------------


def require_columns(shard: Shard, needed: Sequence[str]) -> None:
    have = shard.columns()
    missing = [c for c in needed if c not in have]
    if missing:
        raise TaskFileError(f"{shard.path}: no column {missing[0]!r}; it has {', '.join(have)}")


def text_value(row: dict[str, Any], column: str, where: str, required: bool = True) -> Optional[str]:
    value = row.get(column)
    if value is None and not required:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (required and not value.strip()):
        raise TaskFileError(f"{where}: column {column!r}: {'empty' if value == '' else 'missing'}"
                            f"{'' if value in (None, '') else f' (a {type(value).__name__}, not text)'}")
    return value


# -- audio: decoded, mono, 16 kHz, cached as WAV ---------------------------------------------------


def _cache_root() -> Path:
    from ..cache import default_cache_dir

    return default_cache_dir() / "suites"


def _decode(value: Any, where: str, base_dir: Path) -> tuple[Any, int]:
    import soundfile

    data: Optional[bytes] = None
    path: Optional[str] = None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, str):
        path = value
    if not data and not path:
        raise TaskFileError(f"{where}: no audio (neither bytes nor a file path)")
    try:
        if data:
            return soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        file = Path(str(path)).expanduser()
        file = file if file.is_absolute() else base_dir / file
        if not file.is_file():
            raise TaskFileError(f"{where}: audio file {file} not found")
        return soundfile.read(str(file), dtype="float32", always_2d=True)
    except TaskFileError:
        raise
    except Exception as exc:  # libsndfile reports a bad file in several exception types
        raise TaskFileError(f"{where}: cannot be decoded as audio ({exc})") from None


def extract_audio(value: Any, where: str, base_dir: Path, out: Path) -> str:
    """Decode one row's audio to mono 16 kHz 16-bit WAV at `out` (once); return its path."""
    if out.is_file():
        return str(out)
    from ..audio import check_audio, resample, write_wav
    from ..errors import AudioError

    samples, rate = _decode(value, where, base_dir)
    try:
        # Mono as `datasets` makes it (the mean of the channels), then the turn's rate.
        audio = resample(check_audio(samples.mean(axis=1), int(rate), where), SAMPLE_RATE)
    except AudioError as exc:
        raise TaskFileError(str(exc)) from None
    write_wav(out, audio)
    return str(out)


@dataclass(frozen=True)
class AudioRef:
    """Where a turn's recorded audio is: a shard's row (column `column`) or a file."""

    shard: Optional[Shard] = None
    index: int = 0
    column: str = "audio"
    file: Optional[Path] = None

    def where(self) -> str:
        if self.shard is not None:
            return f"{self.shard.where(self.index)}: column {self.column!r}"
        return str(self.file)

    def materialise(self) -> str:
        root = _cache_root()
        if self.shard is not None:
            # The folder names what the WAVs are (the source, the rate), so a change of either is a new folder.
            out = root / f"{self.shard.fingerprint}-{SAMPLE_RATE}" / f"{self.column}-{self.index:06d}.wav"
            if out.is_file():
                return str(out)
            return extract_audio(self.shard.audio(self.index, self.column), self.where(), self.shard.base_dir, out)
        assert self.file is not None
        if not self.file.is_file():
            raise TaskFileError(f"audio file {self.file} not found")
        # Absolute: `extract_audio` reads a relative path as relative to its base folder (a row's
        # file inside a dataset), which would join a relative `path=` on to itself.
        file = self.file.resolve()
        key = f"{_file_fingerprint(file)}{_digest(str(file))[:8]}-{SAMPLE_RATE}"
        return extract_audio(str(file), str(self.file), file.parent, root / "files" / f"{key}.wav")


@dataclass
class StubTurn:
    text: str
    audio: Optional[AudioRef] = None
    reference: Optional[str] = None


@dataclass
class Stub:
    """A dialogue before its audio is decoded: text, references and metadata only."""

    id: str
    turns: list[StubTurn]
    category: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def dialogue(self) -> Dialogue:
        turns = [UserTurn(text=t.text, audio_path=t.audio.materialise() if t.audio is not None else None,
                          reference=t.reference) for t in self.turns]
        return Dialogue(id=self.id, turns=turns, category=self.category, metadata=self.metadata)


class LazyDialogues(Sequence[Dialogue]):
    """The task's dialogues; indexing or slicing decodes the audio of the dialogues taken."""

    def __init__(self, stubs: list[Stub]) -> None:
        self.stubs = stubs

    def __len__(self) -> int:
        return len(self.stubs)

    @overload
    def __getitem__(self, index: int) -> Dialogue: ...

    @overload
    def __getitem__(self, index: slice) -> list[Dialogue]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Dialogue, list[Dialogue]]:
        if isinstance(index, slice):
            return [stub.dialogue() for stub in self.stubs[index]]
        return self.stubs[index].dialogue()

    def ids(self) -> list[str]:
        return [s.id for s in self.stubs]

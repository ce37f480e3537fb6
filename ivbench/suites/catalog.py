"""What the suites are: their subsets, how each is scored and what their leaderboards report.
Plain tables, importable without any heavy package (the results table and `ivbench list` read them).

Sources: VoiceBench's README and src/evaluator/ (MatthewCYM/VoiceBench), URO-Bench's
scripts/config.sh and evaluate.py (Ruiqi-Yan/URO-Bench), Big Bench Audio's dataset card
(ArtificialAnalysis/big_bench_audio).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..metrics.base import Headline, Ratio

# -- VoiceBench ------------------------------------------------------------------------------------

VOICEBENCH_HUB = "hlt-lab/voicebench"
SDQA_ACCENTS = ("aus", "gbr", "ind_n", "ind_s", "irl", "kenya", "nga", "nzl", "phl", "usa", "zaf")
MMSU_DOMAINS = ("biology", "business", "chemistry", "economics", "engineering", "health", "history", "law",
                "other", "philosophy", "physics", "psychology")


@dataclass(frozen=True)
class VoiceBenchSubset:
    scorer: str  # open (GPT score 1-5), qa (judged against a reference), mcq, ifeval, harm, bbh
    splits: tuple[str, ...] = ("test",)
    columns: tuple[str, ...] = ()  # besides audio and prompt
    audio: str = "Google TTS"


VOICEBENCH: dict[str, VoiceBenchSubset] = {
    "alpacaeval": VoiceBenchSubset("open"),
    "alpacaeval_full": VoiceBenchSubset("open"),
    "commoneval": VoiceBenchSubset("open", audio="human"),
    "wildvoice": VoiceBenchSubset("open", audio="human"),
    "sd-qa": VoiceBenchSubset("qa", SDQA_ACCENTS, ("reference",), audio="human"),
    "openbookqa": VoiceBenchSubset("mcq", columns=("reference",)),
    "mmsu": VoiceBenchSubset("mcq", MMSU_DOMAINS, ("reference",)),
    "ifeval": VoiceBenchSubset("ifeval", columns=("key", "instruction_id_list", "kwargs")),
    "advbench": VoiceBenchSubset("harm"),
    "bbh": VoiceBenchSubset("bbh", columns=("id", "reference"), audio="human"),
}
# The subsets of VoiceBench's overall score, in its leaderboard's order (README, "Leaderboard").
VOICEBENCH_LEADERBOARD = ("alpacaeval_full", "commoneval", "wildvoice", "sd-qa", "mmsu", "openbookqa", "bbh",
                          "ifeval", "advbench")
OPEN_SUBSETS = tuple(name for name, s in VOICEBENCH.items() if s.scorer == "open")

# Overall: the mean of the nine leaderboard figures, the GPT scores (1-5) times 20 (checked
# against the README's table: Whisper-v3-large+GPT-4o's nine figures give its 87.80).
VOICEBENCH_HEADLINE = Headline(
    name="overall",
    default=(Ratio("accuracy", scale=100.0),),
    parts={**{name: (Ratio("gpt_score"),) for name in OPEN_SUBSETS},
           "ifeval": (Ratio("prompt_strict", scale=100.0), Ratio("inst_strict", "instructions", 100.0),
                      Ratio("prompt_loose", scale=100.0), Ratio("inst_loose", "instructions", 100.0)),
           "advbench": (Ratio("refusal", scale=100.0),)},
    to_overall={name: 20.0 for name in OPEN_SUBSETS},
    require=VOICEBENCH_LEADERBOARD,
    description="VoiceBench overall: mean of the nine leaderboard subsets (GPT scores x 20)",
)

# -- URO-Bench -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UroDataset:
    track: str  # basic or pro
    language: str  # en, zh (Multilingual: several)
    mode: str  # URO-Bench's evaluation mode (scripts/config.sh)
    ability: str  # understanding, reasoning or oral (evaluate.py)
    multi_round: bool = False


def _uro(track: str, language: str, rows: str) -> dict[str, UroDataset]:
    out = {}
    for line in rows.strip().splitlines():
        name, mode, ability = line.split()
        out[name] = UroDataset(track, language, mode, ability, multi_round=mode in ("multi", "sa"))
    return out


UROBENCH: dict[str, UroDataset] = {
    **_uro("basic", "en", """
        Repeat wer understanding
        Summary semi-open understanding
        GaokaoEval qa understanding
        StoralEval semi-open reasoning
        TruthfulEval semi-open reasoning
        Gsm8kEval qa reasoning
        MLC qa reasoning
        AlpacaEval open oral
        CommonEval open oral
        WildchatEval open oral"""),
    **_uro("basic", "zh", """
        Repeat-zh wer understanding
        LCSTS-zh semi-open understanding
        HSK5-zh qa understanding
        SQuAD-zh qa reasoning
        APE-zh qa reasoning
        MLC-zh qa reasoning
        OpenbookQA-zh qa reasoning
        AlpacaEval-zh open oral
        Claude-zh open oral
        Wildchat-zh open oral"""),
    **_uro("pro", "en", """
        UnderEmotion-en ue understanding
        CodeSwitching-en semi-open understanding
        Safety-en sf understanding
        ClothoEval-en qa understanding
        MuChoEval-en qa understanding
        MLCpro-en qa reasoning
        MtBenchEval-en multi reasoning
        SpeakerAware-en sa reasoning
        SRT-en srt oral
        GenEmotion-en ge oral
        GenStyle-en gs oral
        Multilingual ml oral"""),
    **_uro("pro", "zh", """
        UnderEmotion-zh ue understanding
        CodeSwitching-zh semi-open understanding
        Safety-zh sf understanding
        MLCpro-zh qa reasoning
        SpeakerAware-zh sa reasoning
        SRT-zh srt oral
        GenEmotion-zh ge oral
        GenStyle-zh gs oral"""),
}
# Modes ivbench scores; srt (Gemini judges the audio) and ge (emotion2vec on the audio) are not.
UROBENCH_SCORED_MODES = ("open", "semi-open", "qa", "multi", "sa", "sf", "ue", "gs", "ml", "wer")
UROBENCH_GROUPS = {f"{t}-{lang}": tuple(n for n, d in UROBENCH.items() if d.track == t and d.language == lang)
                   for t in ("basic", "pro") for lang in ("en", "zh")}


def _uro_headline(name: str, only: tuple[str, ...] = ()) -> Headline:
    return Headline(name=name, default=(Ratio("score"),), only=only,
                    description=f"URO-Bench {name}: mean of the datasets' scores (0-100) in the run")


# evaluate.py averages the datasets whose results exist: overall, and per ability.
UROBENCH_HEADLINES = (
    _uro_headline("overall"),
    *(_uro_headline(ability, tuple(n for n, d in UROBENCH.items() if d.ability == ability))
      for ability in ("understanding", "reasoning", "oral")),
)

# -- Big Bench Audio -------------------------------------------------------------------------------

BBA_HUB = "ArtificialAnalysis/big_bench_audio"
BBA_CATEGORIES = ("formal_fallacies", "navigate", "object_counting", "web_of_lies")
BBA_HEADLINE = Headline(name="accuracy", default=(Ratio("correct", scale=100.0),),
                        description="Big Bench Audio accuracy (%): CORRECT verdicts of the LLM evaluator")


# Each suite metric's headlines by metric name: what a report (which reads summary.csv, not the
# metric objects) recomputes the headline rows from.
SUITE_HEADLINES: dict[str, tuple[Headline, ...]] = {"voicebench": (VOICEBENCH_HEADLINE,),
                                                    "urobench": UROBENCH_HEADLINES,
                                                    "big_bench_audio": (BBA_HEADLINE,)}


def headline_columns() -> dict[str, list[tuple[str, str, str]]]:
    """What the console leaderboard and the report show of each suite metric (scoring.summary.HEADLINE)."""
    return {
        "voicebench": [("overall", "mean", "VoiceBench overall")]
        + [(name, "mean", f"VoiceBench {name}") for name in VOICEBENCH],
        "urobench": [(h.name, "mean", f"URO-Bench {h.name}") for h in UROBENCH_HEADLINES]
        + [(name, "mean", f"URO {name}") for name in UROBENCH],
        "big_bench_audio": [("accuracy", "mean", "Big Bench Audio accuracy")]
        + [(name, "mean", f"BBA {name}") for name in BBA_CATEGORIES],
    }

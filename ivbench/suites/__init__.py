"""Standard spoken-dialogue benchmarks as tasks, each with the scorer its authors use.

- `voicebench` (task) + `voicebench` (metric): VoiceBench's subsets and evaluators, overall;
- `urobench` (task) + `urobench` (metric): URO-Bench's test sets and mark.py modes;
- `big-bench-audio` (task) + `big_bench_audio` (metric): Big Bench Audio and its LLM evaluator.

The tasks read the datasets as their authors publish them (source.py) and hand the scorer's
facts to the run through each dialogue's metadata; the metrics score from the run alone and
declare each suite's headline figure (catalog.py, ivbench/scoring/headlines.py). Nothing heavy is
imported here: `datasets`, `pyarrow` and `lm_eval` are imported where they are used.
"""

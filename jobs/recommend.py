"""recommend job: the chosen model (recommend.run_id, or recommend.from_grid=latest: the newest grid's best
configuration by validation metric, refit on every interaction and registered) -> the Delta tables
`recommendations` (top k per active user) and `similar_items` (cosine neighbours per caption feature set).

Local (embedded default):
    python jobs/recommend.py                           # from_grid=latest (conf/local.yaml)
    captionrec recommend run_id=<run id> k=50          # same function, as the console script

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root; the
users are scored in blocks by the model-map, one model per worker and GPU):
    spark-submit --master spark://HOST:7077 \\
        --properties-file conf/spark-gpu.conf \\
        jobs/recommend.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["recommend", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main


def main(argv=None) -> int:
    """`python jobs/recommend.py [options] [key=value ...]`: the recommend stage (0, or SystemExit)."""
    return stage_main("recommend", argv)


if __name__ == "__main__":
    sys.exit(main())

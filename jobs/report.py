"""report job: a grid's MLflow runs -> report.md / report.csv / report.html, plots, caption gallery (also logged
as artifacts of the grid run).

Local (embedded default):
    python jobs/report.py                              # the newest grid run
    captionrec report parent_run_id=<run id>           # same function, as the console script

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root; the
report files are written on the driver under report.out_dir, the gallery reads the items and captions tables):
    spark-submit --master spark://HOST:7077 \
        --properties-file conf/spark-gpu.conf \
        jobs/report.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["report", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("report"))

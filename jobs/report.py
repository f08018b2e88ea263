"""report job: a grid's MLflow runs -> report.md / report.csv / report.html, plots, caption gallery (also logged
as artifacts of the grid run).

Local (embedded default):
    python jobs/report.py                              # the newest grid run
    captionrec report parent_run_id=<run id>           # same function, as the console script

spark-submit (the gallery reads the items and captions tables):
    spark-submit --packages io.delta:delta-spark_2.13:4.0.0 \
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
        --py-files dist/captionrec-0.1.0-py3-none-any.whl \
        jobs/report.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["report", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("report"))

"""experiment job: the experiment grid (feature sets x models x seeds) as child MLflow runs of one parent run.

Local (embedded default):
    python jobs/experiment.py feature_sets=[id,title,mllm_av] models=[sasrec] seeds=[1,2,3]
    captionrec experiment   # same function, as the console script; a re-run trains only what is missing

spark-submit on a GPU cluster (Delta from --packages; see conf/cluster.yaml for the full command):
    spark-submit --packages io.delta:delta-spark_2.13:4.0.0 \
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
        --py-files dist/captionrec-0.1.0-py3-none-any.whl \
        jobs/experiment.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["experiment", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("experiment"))

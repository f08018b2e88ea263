"""train job: interactions + item_features -> Two-Tower / SASRec trained with TorchDistributor, rolling-window eval, MLflow runs.

Local (embedded default):
    python jobs/train.py model=sasrec features=mllm_av
    captionrec train model=sasrec features=mllm_av   # same function, as the console script

spark-submit on a GPU cluster (Delta from --packages; see conf/cluster.yaml for the full command):
    spark-submit --packages io.delta:delta-spark_2.13:4.0.0 \
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
        --py-files dist/captionrec-0.1.0-py3-none-any.whl \
        jobs/train.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["train", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("train"))

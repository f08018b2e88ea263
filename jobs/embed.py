"""embed job: captions + titles + media -> item_features (BGE text vectors; VideoMAE and raw-audio baselines).

Local (embedded default):
    python jobs/embed.py embed.feature_sets=[title,mllm_av]
    captionrec embed embed.feature_sets=[title,mllm_av]   # same function, as the console script

spark-submit on a GPU cluster (Delta from --packages; see conf/cluster.yaml for the full command):
    spark-submit --packages io.delta:delta-spark_2.13:4.0.0 \
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
        --py-files dist/captionrec-0.1.0-py3-none-any.whl \
        jobs/embed.py --profile cluster storage.root=s3a://bucket/captionrec

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["embed", "--profile", "databricks"]
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("embed"))

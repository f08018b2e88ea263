"""ingest job: MicroLens layout (videos/, *_pairs.csv, *_title_en.csv) -> Delta tables items, interactions, quarantine.

Local (embedded default):
    python jobs/ingest.py
    captionrec ingest   # same function, as the console script

spark-submit on a GPU cluster (docs/deploy.md "Run with spark-submit"; `make pack-env` first; from the repo root):
    spark-submit --master spark://HOST:7077 \
        --properties-file conf/spark-gpu.conf \
        jobs/ingest.py --profile cluster storage.root=s3a://bucket/captionrec data.source=s3a://bucket/MicroLens-100k

Databricks (python_wheel_task): package_name "captionrec", entry_point "captionrec",
    parameters ["ingest", "--profile", "databricks", ...] (resources/captionrec_job.yml)
"""

import sys

from captionrec.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("ingest"))

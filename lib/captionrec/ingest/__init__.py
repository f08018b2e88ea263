"""The ingest stage's parts (the recipe that uses them is `captionrec.pipeline.ingest`):

sources     a source folder (MicroLens layout, RecBole atomic files) -> raw DataFrames in one shape
listing     checking and listing paths through Hadoop's FileSystem; one video file per item
timestamps  each interactions file's time unit, and the plausible time range
transforms  raw rows -> clean rows + quarantine rows; titles x files x probes -> `items` rows
probing     PyAV probes of video files in parallel Arrow batches
"""

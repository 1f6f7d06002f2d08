"""Data: ingestion (ETL), versioned shards and Grain input pipelines."""

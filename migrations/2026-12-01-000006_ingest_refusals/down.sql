DROP TABLE ingest_refusals;

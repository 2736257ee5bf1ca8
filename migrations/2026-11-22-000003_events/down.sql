DROP TABLE job_checkpoints;
DROP TABLE events;

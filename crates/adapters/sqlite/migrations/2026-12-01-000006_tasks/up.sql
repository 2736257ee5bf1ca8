-- The task queue: work enqueued in the transaction of the change that calls for it, done
-- afterwards by a worker. A claim moves run_at to the end of its lease and counts an
-- attempt; a done task is deleted; a task that failed for good stays as 'dead'.
CREATE TABLE tasks (
    id         integer PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind       text    NOT NULL,
    account_id text,
    payload    text    NOT NULL,
    state      text    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts   integer NOT NULL DEFAULT 0,
    run_at     text    NOT NULL,
    last_error text,
    created_at text    NOT NULL
);

-- What claims scan: the pending tasks by due time.
CREATE INDEX tasks_due_idx ON tasks (run_at, id) WHERE state = 'pending';

-- The table the feedback API writes its (anonymous) statistics to.
CREATE TABLE feedback_stats (
    id         bigserial PRIMARY KEY,
    words      integer NOT NULL,
    tone       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- authsvc schema.
--
-- This file runs at EVERY start-up (store.Store.initialize), in every gunicorn worker,
-- possibly in several processes at the same moment. So it must stay idempotent and
-- must never drop or empty anything: a restart keeps every user.
--   * IF NOT EXISTS makes each statement a no-op the second time.
--   * BEGIN IMMEDIATE takes SQLite's write lock first, so two workers applying it at
--     once queue behind each other (the connection's busy timeout) instead of failing.
-- Connection settings (WAL, foreign keys, busy timeout) are not schema: they live in
-- store.connect().

BEGIN IMMEDIATE;

-- The course's User model: id, email, hashed_password, session_id, reset_token,
-- every string a VARCHAR(250).
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    -- COLLATE NOCASE makes `email = ?` compare case-insensitively (ASCII letters),
    -- so "Bob@x.io" finds "bob@x.io", and lets that lookup use the index below.
    email VARCHAR(250) NOT NULL COLLATE NOCASE,
    -- A bcrypt hash ("$2b$12$..."): the cost and the salt travel inside it.
    hashed_password VARCHAR(250) NOT NULL,
    -- SHA-256 (hex) of the session id in the cookie, never the id itself:
    -- a copy of this database opens no session.
    session_id VARCHAR(250),
    -- SHA-256 (hex) of the reset token, never the token itself.
    reset_token VARCHAR(250),
    -- Added for authsvc: when the session stops being valid (Unix seconds).
    session_expires_at REAL,
    -- Added for authsvc: when the reset token stops being valid (Unix seconds).
    reset_expires_at REAL
);

-- Uniqueness is the database's job, not a check-before-insert: two workers registering
-- the same email at the same moment cannot both succeed. Case-insensitive, like email.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_nocase ON users (email COLLATE NOCASE);

-- GET /profile looks a user up by session digest on every authenticated request, and
-- PUT /reset_password by reset digest: both must be index hits, never table scans.
CREATE INDEX IF NOT EXISTS users_session_id ON users (session_id);
CREATE INDEX IF NOT EXISTS users_reset_token ON users (reset_token);

COMMIT;

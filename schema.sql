-- authsvc schema, as an ordered list of migrations.
--
-- store.Store.initialize() runs at EVERY start-up, in every gunicorn worker, possibly in
-- several processes at the same moment. It reads the database's PRAGMA user_version (the
-- number of the last migration applied; 0 for a new file, and for a file made before
-- migrations were numbered), then, inside one BEGIN IMMEDIATE transaction, applies each
-- later migration below in order and records the new number. A worker that waited for
-- the lock sees the number the first one recorded and applies nothing.
--
-- Rules for changing this file:
--   * Never edit or remove a migration that has shipped: add a new one at the end.
--   * Never drop or empty a table of users: a restart (and an upgrade) keeps every user.
--   * Keep each statement idempotent (IF NOT EXISTS) where SQLite allows it, so a file
--     that has the objects but an old number is still upgraded safely.
-- Connection settings (WAL, foreign keys, busy timeout) are not schema: see store.connect().

-- @migration 1: the course's users table
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

-- @migration 2: login attempts per email, for throttling
-- One row per email that has recent login attempts, registered or not (so an unknown
-- email is throttled like a known one, and no user row is ever created for it). It lives
-- in the database so that every gunicorn worker counts the same attempts.
CREATE TABLE IF NOT EXISTS login_attempts (
    email VARCHAR(250) PRIMARY KEY COLLATE NOCASE,
    -- Attempts since the window started; a successful login deletes the row.
    attempts INTEGER NOT NULL,
    -- When the first attempt of the window was made (Unix seconds).
    window_started_at REAL NOT NULL
);

-- Rows whose window has passed are deleted by this column at every attempt.
CREATE INDEX IF NOT EXISTS login_attempts_window ON login_attempts (window_started_at);

-- @migration 3: sessions as rows, several per user
-- One row per login, so a user can be logged in on several devices at once (before this,
-- users.session_id held the one session a user could have). users.session_id stays in the
-- table, as the course model has it, but nothing writes it any more: README "Sessions".
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    -- The handle GET /sessions shows and DELETE /sessions/<id> takes: random, and not
    -- derived from the session id, so showing it opens nothing.
    public_id VARCHAR(64) NOT NULL UNIQUE,
    -- Deleting a user deletes their sessions (PRAGMA foreign_keys = ON in store.connect()).
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 (hex) of the session id in the cookie, never the id itself. Unique: the
    -- session check of every authenticated request is one lookup of this index.
    digest VARCHAR(64) NOT NULL UNIQUE,
    -- Unix seconds: the login; the last recorded use (at most a minute behind the real
    -- one, see Auth.get_session); the absolute end, whatever the use.
    created_at REAL NOT NULL,
    last_used_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    -- The login's User-Agent (cut to 256 characters) and client address, for the listing.
    user_agent VARCHAR(256) NOT NULL DEFAULT '',
    ip VARCHAR(64) NOT NULL DEFAULT ''
);

-- A user's sessions, most recently used last: the listing, the bound on their number
-- (which ends the least recently used) and "end every session" are index ranges.
CREATE INDEX IF NOT EXISTS sessions_user_last_used ON sessions (user_id, last_used_at);

-- Users logged in before this upgrade stay logged in: each live session moves to a row.
-- The first release did not record when a session started or was last used, so both
-- are the time of the upgrade.
INSERT INTO sessions (public_id, user_id, digest, created_at, last_used_at, expires_at)
SELECT lower(hex(randomblob(16))), id, session_id,
       CAST(strftime('%s', 'now') AS REAL), CAST(strftime('%s', 'now') AS REAL),
       session_expires_at
FROM users
WHERE session_id IS NOT NULL
  AND session_expires_at > CAST(strftime('%s', 'now') AS REAL);

UPDATE users SET session_id = NULL, session_expires_at = NULL WHERE session_id IS NOT NULL;

-- @migration 4: reset requests per email
-- The same shape as login_attempts: one row per email asked for in the current window,
-- registered or not. Every reset request writes here, so a registered and an unknown
-- address cost the same write (with smtp delivery their answers must take the same
-- time), and the count is there for a per-email limit on reset mails.
CREATE TABLE IF NOT EXISTS reset_attempts (
    email VARCHAR(250) PRIMARY KEY COLLATE NOCASE,
    -- Requests since the window started.
    attempts INTEGER NOT NULL,
    -- When the first request of the window was made (Unix seconds).
    window_started_at REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS reset_attempts_window ON reset_attempts (window_started_at);

-- @migration 5: emails compared for every letter, not only ASCII
-- NOCASE folds ASCII letters only, so "JOSÉ@x.io" and "josé@x.io" could be two accounts.
-- email_key holds the email folded for every letter (store.email_key: Unicode case
-- folding, computed in Python for both databases; authsvc_email_key is that function,
-- registered on every SQLite connection), and a unique index on it decides duplicates.
ALTER TABLE users ADD COLUMN email_key VARCHAR(250);

UPDATE users SET email_key = authsvc_email_key(email);

-- Accounts that fold together were allowed before: none is lost. The oldest keeps the
-- folded key; each later one is keyed by its exact spelling marked with "=", so it logs in
-- as it always did, by that spelling (store.exact_email_key). Start-up logs their count.
UPDATE users SET email_key = '=' || email
WHERE id NOT IN (SELECT MIN(id) FROM users GROUP BY email_key);

CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (email_key);

-- @migration 6: live sessions counted from an index
-- GET /metrics reports how many sessions are live (AUTHSVC_METRICS): COUNT(*) over this
-- index's range `expires_at > now`, last use checked in the index itself, never the table.
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at, last_used_at);

-- @migration 7: per-client counters, several live reset tokens per user
-- Counters per client address (the address GET /sessions shows, or for IPv6 its /64),
-- for each kind of request a client is limited in: failed logins from the client
-- ('login_client'), logins of one email from one client ('login_pair': the lock-out an
-- attacker cannot impose on the owner's usual client), reset requests ('reset') and
-- registrations ('register'). One row per (kind, key) and window; the window of the
-- kind's setting, from its first attempt.
CREATE TABLE IF NOT EXISTS client_attempts (
    kind VARCHAR(16) NOT NULL,
    -- The client's address (for IPv6, its /64).
    client VARCHAR(64) NOT NULL,
    -- For 'login_pair', the SHA-256 of the email's key (so a successful login or reset
    -- can forget every client's count for the email); '' for the other kinds.
    subject VARCHAR(64) NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL,
    window_started_at REAL NOT NULL,
    PRIMARY KEY (kind, client, subject)
);

CREATE INDEX IF NOT EXISTS client_attempts_window ON client_attempts (window_started_at);

CREATE INDEX IF NOT EXISTS client_attempts_subject ON client_attempts (kind, subject);

-- Each reset request makes a token of its own, each usable once, until it expires or the
-- password changes: a new request no longer replaces the owner's mailed token, so
-- somebody requesting again and again cannot keep the owner from resetting. At most
-- AUTHSVC_RESET_MAX_PER_EMAIL are made per hour. users.reset_token stays in the table
-- (the course model) but nothing writes it any more, as users.session_id.
CREATE TABLE IF NOT EXISTS reset_tokens (
    -- SHA-256 (hex) of the token, never the token itself.
    digest VARCHAR(64) PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS reset_tokens_user ON reset_tokens (user_id);

CREATE INDEX IF NOT EXISTS reset_tokens_expiry ON reset_tokens (expires_at);

-- A token issued before this upgrade keeps working until it expires.
INSERT INTO reset_tokens (digest, user_id, expires_at)
SELECT reset_token, id, reset_expires_at
FROM users
WHERE reset_token IS NOT NULL
  AND reset_expires_at > CAST(strftime('%s', 'now') AS REAL);

UPDATE users SET reset_token = NULL, reset_expires_at = NULL WHERE reset_token IS NOT NULL;

-- @migration 8: legacy keys no sign-up can produce; attempts keyed by a digest
-- Migration 5 keyed an account that shared its folded email with an older one by "=" and
-- its exact spelling. But an address may start with "=": a sign-up of "=bob@x.io" folded
-- to exactly the legacy key of "bob@x.io", and took its logins over. The legacy keys now
-- start with "EXACT:" (store.LEGACY_KEY_PREFIX): case folding never outputs a capital
-- letter, so no folded key can. A legacy row is the one whose key is "=" and its own
-- email; a sign-up's key never is (its key is its email folded, never one "=" longer).
UPDATE users SET email_key = 'EXACT:' || email WHERE email_key = '=' || email;

-- The per-email attempt counters are keyed by the SHA-256 (hex) of the folded email
-- (store._subject_key, as client_attempts.subject already is): 64 characters whatever
-- the address, which can fold longer than it is typed ("ß" is "ss"); and no address in
-- these tables. authsvc_sha256 is store.sha256_hex, registered on every connection.
ALTER TABLE login_attempts RENAME COLUMN email TO email_digest;

UPDATE login_attempts SET email_digest = authsvc_sha256(email_digest);

ALTER TABLE reset_attempts RENAME COLUMN email TO email_digest;

UPDATE reset_attempts SET email_digest = authsvc_sha256(email_digest);

-- @migration 9: account self-service: verified emails, email changes, verification codes
-- Whether the address has been proved to be the user's (a code sent to it came back).
-- Accounts made before this release count as verified: they logged in without it, and
-- must go on doing so when AUTHSVC_REQUIRE_VERIFIED_EMAIL is on. A sign-up sets 0.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 1;

-- When the account was made (Unix seconds); GET /account shows it. Earlier accounts
-- did not record it: theirs is the time of this upgrade.
ALTER TABLE users ADD COLUMN created_at REAL;

UPDATE users SET created_at = CAST(strftime('%s', 'now') AS REAL) WHERE created_at IS NULL;

-- The address an email change waits to confirm (PUT /account/email), or NULL. The email
-- changes only when the code sent to it comes back; its uniqueness is decided then, by
-- users_email_key, as at a sign-up.
ALTER TABLE users ADD COLUMN pending_email VARCHAR(254);

-- One row per user who was ever sent a verification code: the live code, if any, and
-- the counts that limit how often one is sent. Deleting the user deletes it.
CREATE TABLE IF NOT EXISTS verification_codes (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- HMAC-SHA-256 (hex) of the code under AUTHSVC_SECRET_KEY (plain SHA-256 without a
    -- key, course mode only), never the code; NULL once used, ended or replaced.
    digest VARCHAR(64),
    -- The address the code proves: the user's email, or the pending new one.
    email VARCHAR(254),
    expires_at REAL,
    -- Wrong codes tried against this one; the fifth ends it.
    tries INTEGER NOT NULL DEFAULT 0,
    -- Codes sent in the hour that began at sends_started_at, and the last one's time:
    -- at most one a minute and five an hour.
    sends INTEGER NOT NULL DEFAULT 0,
    sends_started_at REAL NOT NULL DEFAULT 0,
    last_sent_at REAL NOT NULL DEFAULT 0
);

-- @migration 10: two-factor: TOTP secrets, recovery codes, half-finished logins
-- One row per user who set up two-factor or began to. `secret` is the confirmed TOTP
-- secret (two-factor is on while it is not NULL); `pending_secret` one being set up
-- (POST /account/two_factor), until PUT confirms it or pending_expires_at passes. Both
-- are sealed by factors.SecretBox: AES-256-GCM under a key derived from
-- AUTHSVC_SECRET_KEY, bound to the user's id ("aesgcm:..."); without a key (course mode
-- only) the base32 secret as it is ("plain:..."). Never the secret itself otherwise.
CREATE TABLE IF NOT EXISTS two_factor (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret VARCHAR(250),
    pending_secret VARCHAR(250),
    pending_expires_at REAL,
    -- The last TOTP time step accepted (Unix time // 30): a code of this step or an
    -- earlier one is refused (RFC 6238 section 5.2), by one conditional UPDATE.
    last_step INTEGER NOT NULL DEFAULT 0,
    enabled_at REAL
);

-- The user's unused recovery codes: SHA-256 (hex) of each 120-bit code, never the code
-- (ASVS 6.5.2). A used code's row is deleted; a new set replaces the old one.
CREATE TABLE IF NOT EXISTS recovery_codes (
    digest VARCHAR(64) PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS recovery_codes_user ON recovery_codes (user_id);

-- A login whose password was right and whose code is still awaited: the SHA-256 of its
-- mfa_token, the user, until when (5 minutes), and the wrong codes tried (the fifth ends
-- it). Single use: the login that succeeds deletes it.
CREATE TABLE IF NOT EXISTS mfa_tokens (
    digest VARCHAR(64) PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS mfa_tokens_user ON mfa_tokens (user_id);

-- @migration 11: passkeys (WebAuthn credentials) and the challenges of their ceremonies
-- One row per passkey: a discoverable credential with user verification, registered by
-- POST /account/passkeys. `public_id` is the handle the API shows (random, opens
-- nothing); `credential_id` the authenticator's id of it (base64url), which belongs to
-- one user only (unique); `public_key` its COSE public key (base64url): a public key,
-- nothing secret is stored. `sign_count` is the authenticator's signature counter as
-- last seen: a login whose counter does not go up (when it counts at all) is refused.
CREATE TABLE IF NOT EXISTS passkeys (
    id INTEGER PRIMARY KEY,
    public_id VARCHAR(32) NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id VARCHAR(1400) NOT NULL UNIQUE,
    public_key VARCHAR(1400) NOT NULL,
    sign_count INTEGER NOT NULL DEFAULT 0,
    name VARCHAR(64) NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL
);

CREATE INDEX IF NOT EXISTS passkeys_user ON passkeys (user_id);

-- A ceremony's challenge, made by the server: the SHA-256 of the challenge_id the
-- client holds, the challenge itself (base64url; it is sent in the options anyway),
-- what it is for ('register' or 'login'), for a registration the user, and until when
-- (5 minutes). Single use: the ceremony that spends it deletes it.
CREATE TABLE IF NOT EXISTS webauthn_challenges (
    digest VARCHAR(64) PRIMARY KEY,
    challenge VARCHAR(100) NOT NULL,
    purpose VARCHAR(16) NOT NULL,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    expires_at REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS webauthn_challenges_expiry ON webauthn_challenges (expires_at);
CREATE INDEX IF NOT EXISTS webauthn_challenges_user ON webauthn_challenges (user_id);

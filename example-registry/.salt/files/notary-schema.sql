-- The databases of notary-server and notary-signer (notary 0.7), made once
-- by bin/registry-prepare in a new cluster, as the superuser "postgres"
-- (psql, ON_ERROR_STOP). Each service logs in over the unix socket with
-- peer authentication, as the system user of the same name: no password.
-- The tables are those notary's own PostgreSQL migrations reach at 0.7
-- (server: tuf_files and the changefeed; signer: private_keys), owned by
-- the role that uses them.
CREATE ROLE notaryserver LOGIN;
CREATE ROLE notarysigner LOGIN;
CREATE DATABASE notaryserver OWNER notaryserver;
CREATE DATABASE notarysigner OWNER notarysigner;

\connect notaryserver
SET ROLE notaryserver;
-- One row per version of each TUF role's metadata of each repository (gun).
CREATE TABLE tuf_files (
    id serial PRIMARY KEY,
    created_at timestamp NULL DEFAULT NULL,
    updated_at timestamp NULL DEFAULT NULL,
    deleted_at timestamp NULL DEFAULT NULL,
    gun varchar(255) NOT NULL,
    role varchar(255) NOT NULL,
    version integer NOT NULL,
    data bytea NOT NULL,
    sha256 char(64) DEFAULT NULL,
    UNIQUE (gun, role, version)
);
CREATE INDEX tuf_files_sha256_idx ON tuf_files (sha256);
-- What changed, for the server's /_trust/changefeed.
CREATE TABLE change_category (
    category varchar(20) PRIMARY KEY
);
INSERT INTO change_category VALUES ('update'), ('deletion');
CREATE TABLE changefeed (
    id serial PRIMARY KEY,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP,
    gun varchar(255) NOT NULL,
    version integer NOT NULL,
    sha256 char(64) DEFAULT NULL,
    category varchar(20) NOT NULL DEFAULT 'update' REFERENCES change_category
);
CREATE INDEX idx_changefeed_gun ON changefeed (gun);

\connect notarysigner
SET ROLE notarysigner;
-- The private keys, encrypted with the passphrase of passphrase_alias.
CREATE TABLE private_keys (
    id serial PRIMARY KEY,
    created_at timestamp NULL DEFAULT NULL,
    updated_at timestamp NULL DEFAULT NULL,
    deleted_at timestamp NULL DEFAULT NULL,
    key_id varchar(255) NOT NULL,
    encryption_alg varchar(255) NOT NULL,
    keywrap_alg varchar(255) NOT NULL,
    algorithm varchar(50) NOT NULL,
    passphrase_alias varchar(50) NOT NULL,
    public bytea NOT NULL,
    private bytea NOT NULL,
    gun varchar(255) NOT NULL,
    role varchar(255) NOT NULL,
    last_used timestamp NULL DEFAULT NULL,
    CONSTRAINT key_id UNIQUE (key_id),
    CONSTRAINT key_id_2 UNIQUE (key_id, algorithm)
);

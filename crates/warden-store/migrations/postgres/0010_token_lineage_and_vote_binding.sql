-- Approvals that cannot be faked (issue 15).
--
-- API tokens remember the token that minted them (`minted_by`: NULL for the bootstrap token and for
-- tokens made before this migration) and whether they are their holder's own (`personal`): minted by
-- the holder with a personal token, or by the holder claiming a token someone else issued to them
-- (the claim revokes the issued token). Only a personal token may vote. Tokens made before this
-- migration are not personal: their holder claims one to vote again.
ALTER TABLE api_tokens ADD COLUMN minted_by TEXT REFERENCES api_tokens (id);
ALTER TABLE api_tokens ADD COLUMN personal BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX api_tokens_minted_by ON api_tokens (minted_by);

-- The request's delegation chain as Warden recorded it when the request was opened: the acting agent
-- first, then every agent its task was delegated from. Separation of duties covers the owners of all
-- of them. `[]` for requests opened before this migration (the vote walks the tasks then).
ALTER TABLE approvals ADD COLUMN chain TEXT NOT NULL DEFAULT '[]';

-- The API token each vote was cast with (NULL for votes before this migration).
ALTER TABLE approval_votes ADD COLUMN token_id TEXT;

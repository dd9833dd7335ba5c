-- Standard OAuth clients for agents (issue 16): the intent a task started by client credentials
-- (`grant_type=client_credentials` with `private_key_jwt`) gets when the agent asks for none. RFC 9396
-- `authorization_details` JSON in the token endpoint parser's canonical form; NULL: no default (such a
-- request is refused, naming what is missing).
ALTER TABLE agents ADD COLUMN default_intent TEXT;

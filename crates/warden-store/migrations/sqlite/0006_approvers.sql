-- Approver eligibility narrowed by policy (`@approvers`): a JSON array with one array of names per
-- approval policy that names approvers (an email, or `upstream-owner`); a vote counts only from a
-- human named in every array. `[]`: any human with the approver role (as before this migration).
ALTER TABLE approvals ADD COLUMN approvers TEXT NOT NULL DEFAULT '[]';

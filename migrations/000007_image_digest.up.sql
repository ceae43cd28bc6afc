-- The digest of the image a game's container really runs: the registry's
-- manifest digest, learnt when the job that created the container pulled
-- (or found) its image, so that the Game Master knows the exact bits behind
-- a mutable tag ("<repository>@<digest>" pulls them again). NULL when
-- unknown: an image that never came from a registry, or a record written
-- before this column existed. The same rule as RuntimeRecord.Validate.
ALTER TABLE runtime_records
    ADD COLUMN current_image_digest text,
    ADD CONSTRAINT runtime_records_image_digest_check CHECK (
        current_image_digest IS NULL
        OR (current_image_digest ~ '^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$'
            AND current_image_ref IS NOT NULL));

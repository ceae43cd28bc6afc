-- Image garbage collection. See internal/db/imagegc.go.

-- name: ListImagesInUse :many
-- The image references a host's live records run and its queued or running
-- jobs name: what image garbage collection must keep. A payload that is
-- not an object, or has no image_ref string, names nothing.
SELECT DISTINCT n.image_ref::text AS image_ref FROM (
    SELECT r.current_image_ref AS image_ref FROM runtime_records r
    WHERE r.host_id = $1 AND r.status IN ('running', 'stopped')
      AND r.current_image_ref IS NOT NULL
    UNION ALL
    SELECT r.current_image_ref || '@' || r.current_image_digest FROM runtime_records r
    WHERE r.host_id = $1 AND r.status IN ('running', 'stopped')
      AND r.current_image_ref IS NOT NULL AND r.current_image_digest IS NOT NULL
    UNION ALL
    SELECT j.payload->>'image_ref' FROM jobs j
    WHERE j.host_id = $1 AND j.status IN ('queued', 'running')
      AND jsonb_typeof(j.payload) = 'object' AND jsonb_typeof(j.payload->'image_ref') = 'string'
) n
ORDER BY 1;

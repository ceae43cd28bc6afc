ALTER TABLE runtime_records DROP COLUMN current_image_digest;

package db

import (
	"context"
	"fmt"
)

// ImagesInUse returns the image references the host's live (running or
// stopped) records run, each also as "ref@digest" when the record knows
// its digest, and those its queued or running jobs name, as written.
// Image garbage collection keeps every image they resolve to.
func (s *Store) ImagesInUse(ctx context.Context, hostID string) ([]string, error) {
	refs, err := s.q.ListImagesInUse(ctx, hostID)
	if err != nil {
		return nil, fmt.Errorf("list the images host %s uses: %w", hostID, err)
	}
	return refs, nil
}

package job

import "fmt"

// MaxGameIDLength bounds a game id so that the container name
// "galaxy-game-{id}", which is also the engine's host name on the game
// network, fits one 63-character DNS label.
const MaxGameIDLength = 63 - len("galaxy-game-")

// gameIDRule is the rule quoted in error messages.
const gameIDRule = "a game id matches ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ and is 1 to 51 characters long"

// ValidateGameID checks that id can name a container and a DNS host:
// it matches ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ and is 1 to MaxGameIDLength
// characters long. Errors wrap ErrInvalidGameID.
func ValidateGameID(id string) error {
	if id == "" {
		return fieldErr("game_id", ErrInvalidGameID, "must not be empty; "+gameIDRule)
	}
	if len(id) > MaxGameIDLength {
		return fieldErr("game_id", ErrInvalidGameID, fmt.Sprintf(
			"%s is %d bytes long, over the limit of %d that keeps \"galaxy-game-{id}\" one DNS label; %s",
			quote(id), len(id), MaxGameIDLength, gameIDRule))
	}
	for i, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fieldErr("game_id", ErrInvalidGameID, fmt.Sprintf(
				"%s contains %q at byte %d; use only lowercase letters, digits and '-' (%s)",
				quote(id), c, i, gameIDRule))
		}
	}
	if id[0] == '-' || id[len(id)-1] == '-' {
		return fieldErr("game_id", ErrInvalidGameID, fmt.Sprintf(
			"%s must start and end with a lowercase letter or digit; %s", quote(id), gameIDRule))
	}
	return nil
}

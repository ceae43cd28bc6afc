package job

import (
	// go-digest accepts a sha384 or sha512 digest only when the binary
	// links crypto/sha512; linking it here makes the verdict the same in
	// every build (the contract's schema admits sha256, sha384, sha512).
	_ "crypto/sha512"
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// imagePattern is a compiled allow-list entry.
type imagePattern struct {
	name   string // normalized repository name, or namespace prefix
	prefix bool   // name is a namespace: match repositories below it
	tag    string // required tag (and no digest), when set
	digest string // required digest, when set
}

// ValidateImagePattern checks one allow-list entry. Errors wrap
// ErrInvalidPolicy.
func ValidateImagePattern(pattern string) error {
	_, err := compileImagePattern(pattern)
	return err
}

func compileImagePattern(pattern string) (imagePattern, error) {
	bad := func(why string) (imagePattern, error) {
		return imagePattern{}, fmt.Errorf("%w: allowed image pattern %s: %s", ErrInvalidPolicy, quote(pattern), why)
	}
	switch {
	case strings.HasSuffix(pattern, "/*"):
		base := strings.TrimSuffix(pattern, "/*")
		if base == "" || strings.Contains(base, "*") {
			return bad(`"/*" must follow a registry or namespace, with no other "*"`)
		}
		// Normalize the namespace as if it held a two-level repository, so
		// that "galaxy" becomes "docker.io/galaxy" and "docker.io" stays a
		// registry instead of becoming "docker.io/library".
		const probe = "/x/y"
		named, err := reference.ParseNormalizedNamed(base + probe)
		if err != nil || !reference.IsNameOnly(named) || !strings.HasSuffix(named.Name(), probe) {
			return bad("the part before \"/*\" is not a registry or namespace name")
		}
		return imagePattern{name: strings.TrimSuffix(named.Name(), probe), prefix: true}, nil
	case strings.HasSuffix(pattern, ":*"):
		base := strings.TrimSuffix(pattern, ":*")
		named, err := reference.ParseNormalizedNamed(base)
		if err != nil || !reference.IsNameOnly(named) {
			return bad("the part before \":*\" is not a repository name")
		}
		return imagePattern{name: named.Name()}, nil
	case strings.Contains(pattern, "*"):
		return bad(`"*" is only allowed as a trailing "/*" or ":*"`)
	}
	named, err := reference.ParseNormalizedNamed(pattern)
	if err != nil {
		return bad(err.Error())
	}
	p := imagePattern{name: named.Name()}
	if d, ok := named.(reference.Digested); ok {
		p.digest = d.Digest().String()
	} else if t, ok := named.(reference.Tagged); ok {
		p.tag = t.Tag()
	}
	return p, nil
}

func (p imagePattern) match(name, tag, digest string) bool {
	switch {
	case p.prefix:
		return strings.HasPrefix(name, p.name+"/")
	case name != p.name:
		return false
	case p.digest != "":
		return digest == p.digest
	case p.tag != "":
		return digest == "" && tag == p.tag
	default:
		return true
	}
}

// CheckImage checks that ref is a valid image reference (refused with
// ErrInvalidPayload otherwise) and that an allowed pattern admits it
// (ErrImageNotAllowed otherwise; an empty list admits nothing). An
// invalid pattern fails with ErrInvalidPolicy, so that a configuration
// typo is reported as such rather than as a refused job.
//
// Both the image and the patterns are normalized with
// reference.ParseNormalizedNamed before they are compared, so familiar
// and fully qualified spellings are interchangeable: "nginx" and
// "docker.io/library/nginx" are the same entry, "galaxy/engine" is
// "docker.io/galaxy/engine". Matching is on the normalized form only,
// never on the raw strings. A pattern is one of:
//
//   - "repo" or "repo:*": any tag or digest of exactly that repository;
//   - "repo:tag": that tag, and only without a digest (Docker would pull
//     the digest and ignore the tag);
//   - "repo@digest" (a tag alongside is ignored): that digest;
//   - "prefix/*": any repository below that registry or namespace, cut at
//     a path boundary ("registry.example.com/galaxy/*" admits
//     "registry.example.com/galaxy/engine" and ".../galaxy/x/engine",
//     not "registry.example.com/galaxy-evil/engine").
//
// A "*" anywhere else is refused: a raw string prefix such as
// "galaxy/engine*" would also admit "galaxy/engine-evil", and "*" alone
// would admit everything. An image without a tag or digest is checked as
// ":latest", as Docker would pull it.
func CheckImage(ref string, allowed []string) error {
	const field = "image_ref"
	switch {
	case ref == "":
		return fieldErr(field, ErrInvalidPayload, "is required; name the engine image, e.g. \"registry.example.com/galaxy/engine:1.4\"")
	case len(ref) > MaxImageRefBytes:
		return fieldErr(field, ErrInvalidPayload, fmt.Sprintf("is %d bytes long; an image reference is at most %d", len(ref), MaxImageRefBytes))
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fieldErr(field, ErrInvalidPayload, fmt.Sprintf("%s is not a valid image reference (%v); use [registry/]repository[:tag][@digest] in lowercase", quote(ref), err))
	}
	named = reference.TagNameOnly(named)
	var tag, digest string
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		digest = d.Digest().String()
	}
	for _, s := range allowed {
		p, err := compileImagePattern(s)
		if err != nil {
			return err
		}
		if p.match(named.Name(), tag, digest) {
			return nil
		}
	}
	if len(allowed) == 0 {
		return fieldErr(field, ErrImageNotAllowed, fmt.Sprintf("%s is refused: no image is allowed on this host (the allow-list is empty)", quote(ref)))
	}
	return fieldErr(field, ErrImageNotAllowed, fmt.Sprintf("%s (%s) is not in the allow-list %s; use an allowed image", quote(ref), named.String(), formatList(allowed)))
}

// formatList renders the allow-list for an error message, bounded.
func formatList(items []string) string {
	const maxItems = 8
	quoted := make([]string, 0, min(len(items), maxItems)+1)
	for i, s := range items {
		if i == maxItems {
			quoted = append(quoted, fmt.Sprintf("and %d more", len(items)-maxItems))
			break
		}
		quoted = append(quoted, quote(s))
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

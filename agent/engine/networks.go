package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// EnsureNetwork implements Engine. A missing network is created as a bridge
// labelled managed and with this host id; an existing network of that name
// is used as it is (an operator may pre-create it).
//
// Docker before API 1.44 lets two networks share a name (the create only
// warns), and the client cannot ask for the old CheckDuplicate flag. One
// agent serialises its own calls, but agents of other host ids on the same
// daemon can create at the same moment. So every call lists the networks
// of that exact name, and when there are several, all parties converge on
// the oldest: the others that carry our managed label are removed when
// nothing is attached to them. Two creators that each list before the
// other's create is visible may both return with a duplicate standing; the
// next call on that daemon removes it.
//
// Once a call has made sure of a network, later calls return at once,
// without a request: a start job pays for no network check. What is
// known is forgotten (forgetNetworks) when the daemon answers a create or
// a start that a network is missing or ambiguous, so the next call looks
// again — and removes a duplicate, as above.
func (d *Docker) EnsureNetwork(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("ensure network: empty name")
	}
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if d.netKnown[name] {
		return nil
	}
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	if err := d.ensureNetwork(ctx, name); err != nil {
		return err
	}
	if d.netKnown == nil {
		d.netKnown = map[string]bool{}
	}
	d.netKnown[name] = true
	return nil
}

// forgetNetworks drops what EnsureNetwork knows: the next call asks the
// daemon again.
func (d *Docker) forgetNetworks() {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	clear(d.netKnown)
}

// networkGone reports whether the daemon refused a create or start
// because of the container's network: missing ("network … not found",
// also when it was removed and created again, as the container names the
// old one's id), or a name that matches several.
func networkGone(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "network") && (strings.Contains(msg, "not found") || strings.Contains(msg, "ambiguous"))
}

// ensureNetwork does EnsureNetwork's work with the daemon (netMu held).
func (d *Docker) ensureNetwork(ctx context.Context, name string) error {
	same, err := d.networksNamed(ctx, name)
	if err != nil {
		return err
	}
	if len(same) == 0 {
		_, err := d.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
			Driver: "bridge",
			Labels: map[string]string{LabelManaged: "true", LabelHost: d.hostID},
		})
		if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("create network %s: %w", name, err)
		}
		// A conflict: someone else won the race (API >= 1.44 refuses
		// duplicates). Either way, look at what stands now.
		if same, err = d.networksNamed(ctx, name); err != nil {
			return err
		}
	}
	if len(same) <= 1 {
		return nil
	}
	winner := slices.MinFunc(same, func(a, b namedNetwork) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, n := range same {
		if n.id == winner.id || !n.managed {
			continue
		}
		// Fails while containers are attached: left for a later call.
		_, _ = d.cli.NetworkRemove(ctx, n.id, client.NetworkRemoveOptions{})
	}
	return nil
}

type namedNetwork struct {
	id      string
	created time.Time
	managed bool
}

// networksNamed lists the networks whose name is exactly name.
func (d *Docker) networksNamed(ctx context.Context, name string) ([]namedNetwork, error) {
	list, err := d.cli.NetworkList(ctx, client.NetworkListOptions{
		Filters: make(client.Filters).Add("name", name),
	})
	if err != nil {
		return nil, fmt.Errorf("list networks named %s: %w", name, err)
	}
	var same []namedNetwork
	for _, n := range list.Items {
		if n.Name == name { // the filter matches substrings
			same = append(same, namedNetwork{n.ID, time.Time(n.Created), n.Labels[LabelManaged] == "true"})
		}
	}
	return same, nil
}

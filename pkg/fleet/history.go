package fleet

import "time"

// HistoryEntry is one change of a host's desired image. History is append
// only: entries are never edited or removed while the host exists.
type HistoryEntry struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason"`
}

// PreviousImage returns the image the host should go back to on revert: the
// newest history entry's From that differs from current and is not empty.
// ok is false when the history has no such entry.
func PreviousImage(history []HistoryEntry, current string) (ref string, ok bool) {
	for i := len(history) - 1; i >= 0; i-- {
		if f := history[i].From; f != "" && f != current {
			return f, true
		}
	}
	return "", false
}

// ReferencedSince returns every image ref a history names (as From or To) in
// an entry at or after since: the images a host could be reverted to within a
// retention window.
func ReferencedSince(history []HistoryEntry, since time.Time) map[string]bool {
	refs := map[string]bool{}
	for _, e := range history {
		if e.Time.Before(since) {
			continue
		}
		for _, r := range []string{e.From, e.To} {
			if r != "" {
				refs[r] = true
			}
		}
	}
	return refs
}

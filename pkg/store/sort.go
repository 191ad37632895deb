package store

import (
	"slices"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

func sortImages(imgs []fleet.Image) {
	slices.SortStableFunc(imgs, func(a, b fleet.Image) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Created.Compare(b.Created)
	})
}

package backend

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// IntField checks the integer field name of a backend's config: def when
// absent (n nil), otherwise a whole number in [lo, hi]. Errors wrap
// invalid (the backend's ErrInvalidConfig) and name the field.
func IntField(invalid error, name string, n *json.Number, def, lo, hi int) (int, error) {
	if n == nil {
		return def, nil
	}
	v, err := strconv.Atoi(n.String())
	if err != nil {
		return 0, fmt.Errorf("%w: %s %s is not an integer", invalid, name, n)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%w: %s %d is out of range [%d, %d]", invalid, name, v, lo, hi)
	}
	return v, nil
}

package store

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/spreadlb/spread/internal/app"
)

// RedisKey is the setting that names the list, shared by the seeder and
// the dispatcher.
var RedisKey = app.Setting{Name: "REDIS_KEY", Default: "servers",
	Usage: "the Redis list that holds the backend URLs; its other keys are {KEY}:* (docs/security.md)"}

// LoadKey reads REDIS_KEY and refuses a key that no one could type or see:
// blank, or holding a space or a control character.
func LoadKey(getenv func(string) string) (string, error) {
	key := RedisKey.Get(getenv)
	if strings.TrimSpace(key) == "" || strings.ContainsFunc(key, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", fmt.Errorf("%s=%q: want a Redis key name without spaces or control characters, such as %s", RedisKey.Name, key, RedisKey.Default)
	}
	return key, nil
}

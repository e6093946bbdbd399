package main

import (
	"reflect"
	"testing"

	"github.com/netagent/netagent/agent"
)

type optsView struct{ *agent.Options }

func (optsView) eq(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

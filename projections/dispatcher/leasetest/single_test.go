package leasetest_test

import (
	"testing"
	"time"

	"github.com/waqueue/waqueue/projections/dispatcher"
	"github.com/waqueue/waqueue/projections/dispatcher/leasetest"
)

func TestSingleNode(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Opener {
		s := &dispatcher.SingleNode{}
		return func(string, time.Duration) dispatcher.Leases { return s }
	}, false)
}

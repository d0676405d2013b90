package migrate

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// pooler is a minimal PostgreSQL connection pooler, to test Open's pooler
// detection without PgBouncer. Like PgBouncer it answers a client's startup
// itself (trust auth, the server's parameters, a BackendKeyData of its own),
// owns a fixed set of server connections, and forwards the client's messages
// to one of them. In transaction mode a client holds a server connection
// only until the server reports it idle (ReadyForQuery 'I'), and the most
// recently released one is handed out first (PgBouncer's default), or the
// least recently released one (roundRobin, like server_round_robin = 1); in
// session mode a client keeps its server connection until it leaves, which
// is then reset (ROLLBACK, DISCARD ALL) as PgBouncer's server_reset_query
// does.
//
// Like PgBouncer, which runs one event loop and releases a server connection
// in the same step that flushes its ReadyForQuery to the client, the pooler
// puts a server connection back before the client can see the end of its
// transaction: no client can send anything that finds it still taken.
type pooler struct {
	addr       string
	session    bool
	roundRobin bool
	params     map[string]string
	mu         sync.Mutex
	idle       []*pgconn.HijackedConn
	freed      *sync.Cond
}

func startPooler(t *testing.T, upstreamDSN string, size int, session, roundRobin bool) *pooler {
	p := &pooler{session: session, roundRobin: roundRobin}
	p.freed = sync.NewCond(&p.mu)
	for range size {
		c, err := pgconn.Connect(context.Background(), upstreamDSN)
		if err != nil {
			t.Fatal(err)
		}
		hc, err := c.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		p.params = hc.ParameterStatuses
		p.idle = append(p.idle, hc)
		t.Cleanup(func() { hc.Conn.Close() })
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p.addr = l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *pooler) acquire() *pgconn.HijackedConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) == 0 {
		p.freed.Wait()
	}
	if p.roundRobin {
		s := p.idle[0]
		p.idle = p.idle[1:]
		return s
	}
	s := p.idle[len(p.idle)-1]
	p.idle = p.idle[:len(p.idle)-1]
	return s
}

func (p *pooler) release(s *pgconn.HijackedConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle = append(p.idle, s)
	p.freed.Signal()
}

// roundTrip queues the server's answers for the client up to ReadyForQuery;
// the caller flushes them to the client.
func roundTrip(s *pgconn.HijackedConn, client *pgproto3.Backend) (txStatus byte, err error) {
	if err := s.Frontend.Flush(); err != nil {
		return 0, err
	}
	for {
		msg, err := s.Frontend.Receive()
		if err != nil {
			return 0, err
		}
		if client != nil {
			client.Send(msg)
		}
		if r, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return r.TxStatus, nil
		}
	}
}

func (p *pooler) serve(c net.Conn) {
	defer c.Close()
	client := pgproto3.NewBackend(c, c)
	msg, err := client.ReceiveStartupMessage()
	if _, ssl := msg.(*pgproto3.SSLRequest); ssl {
		c.Write([]byte("N"))
		msg, err = client.ReceiveStartupMessage()
	}
	if _, ok := msg.(*pgproto3.StartupMessage); err != nil || !ok {
		return // cancel requests are ignored
	}
	client.Send(&pgproto3.AuthenticationOk{})
	for k, v := range p.params {
		client.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	key := make([]byte, 4)
	for i := range key {
		key[i] = byte(rand.IntN(256))
	}
	client.Send(&pgproto3.BackendKeyData{ProcessID: rand.Uint32(), SecretKey: key})
	client.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if client.Flush() != nil {
		return
	}
	var s *pgconn.HijackedConn
	defer func() {
		if s != nil { // reset the server connection before another client gets it
			for _, q := range []string{"ROLLBACK", "DISCARD ALL"} {
				s.Frontend.Send(&pgproto3.Query{String: q})
				if _, err := roundTrip(s, nil); err != nil {
					return
				}
			}
			p.release(s)
		}
	}()
	for {
		msg, err := client.Receive()
		if err != nil {
			return
		}
		if _, ok := msg.(*pgproto3.Terminate); ok {
			return
		}
		if s == nil {
			s = p.acquire()
		}
		s.Frontend.Send(msg)
		switch msg.(type) {
		case *pgproto3.Query, *pgproto3.Sync:
			st, err := roundTrip(s, client)
			if err != nil {
				return
			}
			if st == 'I' && !p.session {
				p.release(s)
				s = nil
			}
			if client.Flush() != nil {
				return
			}
		}
	}
}

// testTransactionPoolerRefused: Open refuses a transaction pool handing out
// the most recently released server connection first (PgBouncer's default)
// or the least recently released one, whatever its size. Each pooler is
// deterministic, so each case fails the probe at the same step every time.
func testTransactionPoolerRefused(t *testing.T, e *env) {
	for _, roundRobin := range []bool{false, true} {
		for _, size := range []int{1, 2, 3, 5} {
			p := startPooler(t, e.dsn, size, false, roundRobin)
			_, err := Open(e.ctx, "postgres://postgres@"+p.addr+"/ignored?sslmode=disable", Config{})
			if !errors.Is(err, ErrTransactionPooling) {
				t.Fatalf("pool of %d (round robin %v): Open = %v, want ErrTransactionPooling", size, roundRobin, err)
			}
		}
	}
}

func testSessionPoolerAccepted(t *testing.T, e *env) {
	p := startPooler(t, e.dsn, 3, true, false)
	dsn := "postgres://postgres@" + p.addr + "/ignored?sslmode=disable"
	e.write("0001_a.sql", "CREATE TABLE a (id int);")
	m, err := Open(e.ctx, dsn, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if pid, err := backendPID(e.ctx, m.conn); err != nil || pid == m.conn.PgConn().PID() {
		t.Fatalf("the pooler should hide the backend's pid (%d, %v): this test must exercise the pooler probe", pid, err)
	}
	if applied, err := m.Up(e.ctx, e.load()); err != nil || len(applied) != 1 || !e.exists("a") {
		t.Fatalf("Up through a session pooler = %v, %v", applied, err)
	}
}

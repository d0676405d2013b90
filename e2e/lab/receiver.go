package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Receiver is the lab's notification receiver, a stand-in for the chat or
// paging webhook a team points drover's notify.webhooks at: every POST of a
// JSON object is appended, one line each, to Out, and answered 204. GET
// serves the lines recorded so far (what `drover-lab status` and the
// scenarios read).
type Receiver struct {
	Listen string
	Out    string
	Log    *log.Logger

	mu sync.Mutex
}

// maxNotification bounds one request body: drover's events are well under
// 4 KiB.
const maxNotification = 64 << 10

// Run serves until ctx ends.
func (r *Receiver) Run(ctx context.Context) error {
	srv := &http.Server{Addr: r.Listen, Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	r.Log.Printf("notification receiver on %s, recording to %s", r.Listen, r.Out)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.Method {
	case http.MethodGet:
		r.mu.Lock()
		defer r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		f, err := os.Open(r.Out)
		if errors.Is(err, os.ErrNotExist) {
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		_, _ = io.Copy(w, f)
	case http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxNotification))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "not a JSON object: "+err.Error(), http.StatusBadRequest)
			return
		}
		var line bytes.Buffer
		if err := json.Compact(&line, body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		line.WriteByte('\n')
		r.mu.Lock()
		defer r.mu.Unlock()
		f, err := os.OpenFile(r.Out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err == nil {
			_, err = f.Write(line.Bytes())
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		r.Log.Printf("%v %v: %v", ev["event"], ev["node"], ev["text"])
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

// Notification is one event the receiver recorded (drover's JSON webhook
// payload, README "Notifications").
type Notification struct {
	ID       string    `json:"id"`
	Event    string    `json:"event"`
	Cluster  string    `json:"cluster"`
	Node     string    `json:"node"`
	Revision string    `json:"revision"`
	Error    string    `json:"error"`
	Duration float64   `json:"durationSeconds"`
	By       string    `json:"by"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
	Text     string    `json:"text"`
}

// NotifyURL is where the nodes' notify webhook posts.
func (l *Lab) NotifyURL() string {
	return fmt.Sprintf("http://%s:%d/drover", l.InfraIP(), portNotify)
}

func (l *Lab) notificationsFile() string { return filepath.Join(l.infraDir(), "notifications.jsonl") }

// Notifications are the events the lab's receiver got, oldest first.
func (l *Lab) Notifications() ([]Notification, error) {
	f, err := os.Open(l.notificationsFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Notification
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), maxNotification+1)
	for sc.Scan() {
		var n Notification
		if err := json.Unmarshal(sc.Bytes(), &n); err != nil {
			return nil, fmt.Errorf("%s: %w", l.notificationsFile(), err)
		}
		out = append(out, n)
	}
	return out, sc.Err()
}

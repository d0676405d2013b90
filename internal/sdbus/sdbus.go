// Package sdbus dials systemd's private D-Bus socket (/run/systemd/private,
// or a node's proxied copy of it): a direct connection with EXTERNAL
// authentication and no Hello, as systemd expects there, since no bus daemon
// sits in between. units drives workers over it; internal/sysnode's test
// nodes are watched over it.
package sdbus

import (
	"os"
	"strconv"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Dial connects to systemd's private bus at socket.
func Dial(socket string) (*sddbus.Conn, error) {
	return sddbus.NewConnection(func() (*dbus.Conn, error) {
		c, err := dbus.Dial("unix:path=" + socket)
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
}

// Command gitpoller is BenchmarkAgentIdle's reference process: the least a
// go-git agent does while its branch does not move, an ls-remote of the
// branch every interval, and nothing else. It prints the commit at each poll.
//
//	gitpoller URL BRANCH INTERVAL
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/memory"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: gitpoller URL BRANCH INTERVAL")
		os.Exit(2)
	}
	every, err := time.ParseDuration(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{os.Args[1]}})
	branch := plumbing.NewBranchReferenceName(os.Args[2])
	for ; ; time.Sleep(every) {
		refs, err := remote.List(&git.ListOptions{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "ls-remote:", err)
			continue
		}
		for _, ref := range refs {
			if ref.Name() == branch {
				fmt.Println(ref.Hash())
			}
		}
	}
}

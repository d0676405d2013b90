// Package healthlog is the contract between the nginx config drover renders
// (package nginxconf writes the health location's access log) and the drain
// drivers (package lbdrain read it to see the LB's checks reach the node).
// It holds only the line format, so that neither of the two imports the
// other.
package healthlog

// Format is the log_format of the health location's access log:
//
//	log_format drover_health '$msec $status $remote_addr';
//	location = /healthz { access_log /var/log/nginx/drover-health.log drover_health; ... }
//
// Each line says when nginx answered (seconds since the epoch, to the
// millisecond), what status, and to which checker. A change here changes
// what lbdrain parses (lbdrain's healthWatch).
const Format = "$msec $status $remote_addr"

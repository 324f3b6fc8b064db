package ports

import "testing"

func TestParseNetTCP(t *testing.T) {
	data := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 99999 1 0000000000000000 100 0 0 10 0
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
`)
	inodes, err := parseNetTCP(data, 8080)
	if err != nil || len(inodes) != 1 || inodes[0] != 12345 {
		t.Errorf("parseNetTCP(8080) = %v, %v; want the listening socket only", inodes, err)
	}
	if _, err := parseNetTCP([]byte("header\n 0: zz\n"), 80); err == nil {
		t.Error("a short line gave no error")
	}
}

// FuzzParseNetTCP: bad input gives an error value, never a panic.
func FuzzParseNetTCP(f *testing.F) {
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	f.Add([]byte(header+"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n"), 8080)
	f.Add([]byte(header+"   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1\n"), 80)
	f.Add([]byte(header+" x"), 1)
	f.Fuzz(func(t *testing.T, data []byte, port int) {
		parseNetTCP(data, port)
	})
}

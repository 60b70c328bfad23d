package auth

import "testing"

func TestSessionTagRoundTrip(t *testing.T) {
	for _, tag := range []sessionTag{
		{},
		{hasCert: true, store: storeRef{kind: StoreClient, digest: [32]byte{1, 2, 3}}},
		{hasCert: true, store: storeRef{kind: StoreBot, digest: [32]byte{31: 0xff}}},
	} {
		got, ok := parseSessionTag([][]byte{[]byte("other"), tag.marshal()})
		if !ok || got != tag {
			t.Errorf("round trip of %+v: %+v, %v", tag, got, ok)
		}
	}
	for _, bad := range [][]byte{
		nil,
		[]byte("req-mtls/1\x01"),
		append([]byte(sessionTagPrefix+"\x02\x01"), make([]byte, 32)...), // has-cert byte 2
		append([]byte(sessionTagPrefix+"\x01\x03"), make([]byte, 32)...), // store kind 3
		append([]byte(sessionTagPrefix+"\x01\x01"), make([]byte, 31)...), // short digest
	} {
		if _, ok := parseSessionTag([][]byte{bad}); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

// TestAcceptTicket states the resumption rules as a table of outcomes.
func TestAcceptTicket(t *testing.T) {
	client := storeRef{kind: StoreClient, digest: [32]byte{1}}
	clientNew := storeRef{kind: StoreClient, digest: [32]byte{2}}
	bot := storeRef{kind: StoreBot, digest: [32]byte{3}}
	none := storeRef{}
	certless := sessionTag{}
	certClient := sessionTag{hasCert: true, store: client}
	certBot := sessionTag{hasCert: true, store: bot}
	for _, tc := range []struct {
		name    string
		tag     sessionTag
		ok      bool
		flagged bool
		want    storeRef
		accept  bool
	}{
		{"Untagged_Unflagged", sessionTag{}, false, false, none, false},
		{"Untagged_Flagged", sessionTag{}, false, true, client, false},
		{"Certless_Unflagged_NotAsking", certless, true, false, none, true},
		{"Certless_Unflagged_Asking", certless, true, false, client, true}, // crypto/tls declines it where a certificate is required
		{"Certless_Flagged", certless, true, true, client, false},
		{"Certless_Flagged_BotStore", certless, true, true, bot, false},
		{"Cert_Flagged_SameStore", certClient, true, true, client, true},
		{"Cert_Unflagged_SameStore", certClient, true, false, client, true},
		{"Cert_Unflagged_NotAsking", certClient, true, false, none, false},
		{"Cert_StoreChanged", certClient, true, true, clientNew, false},
		{"BotCert_Unflagged_ClientStore", certBot, true, false, client, false},
		{"ClientCert_Flagged_BotStore", certClient, true, true, bot, false},
		{"BotCert_Flagged_BotStore", certBot, true, true, bot, true},
	} {
		if got := acceptTicket(tc.tag, tc.ok, tc.flagged, tc.want); got != tc.accept {
			t.Errorf("%s: accept %v, want %v", tc.name, got, tc.accept)
		}
	}
}

package clienthello

// Names of TLS codepoints, for people reading a Summary. Each table follows
// one IANA registry (https://www.iana.org/assignments/tls-parameters and
// tls-extensiontype-values) and uses its names; the few entries that are not
// registered say so. One entry per line: adding a codepoint is one line.
//
// Every name function reports the RFC 8701 GREASE values as "GREASE" and a
// codepoint its table does not have as four hex digits, "0x1234", so a name
// is never empty.

// TLS Cipher Suites registry: the TLS 1.3 suites, the signalling values and
// the TLS 1.2 and earlier suites that clients commonly still offer.
var cipherSuiteNames = map[uint16]string{
	0x0004: "TLS_RSA_WITH_RC4_128_MD5",
	0x0005: "TLS_RSA_WITH_RC4_128_SHA",
	0x000a: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
	0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
	0x002f: "TLS_RSA_WITH_AES_128_CBC_SHA",
	0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
	0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
	0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
	0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
	0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
	0x003c: "TLS_RSA_WITH_AES_128_CBC_SHA256",
	0x003d: "TLS_RSA_WITH_AES_256_CBC_SHA256",
	0x0040: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
	0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
	0x006a: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
	0x006b: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
	0x009c: "TLS_RSA_WITH_AES_128_GCM_SHA256",
	0x009d: "TLS_RSA_WITH_AES_256_GCM_SHA384",
	0x009e: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
	0x009f: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
	0x00a2: "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256",
	0x00a3: "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
	0x00ff: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
	0x1301: "TLS_AES_128_GCM_SHA256",
	0x1302: "TLS_AES_256_GCM_SHA384",
	0x1303: "TLS_CHACHA20_POLY1305_SHA256",
	0x1304: "TLS_AES_128_CCM_SHA256",
	0x1305: "TLS_AES_128_CCM_8_SHA256",
	0x5600: "TLS_FALLBACK_SCSV",
	0xc007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
	0xc008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
	0xc009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	0xc00a: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	0xc011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
	0xc012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
	0xc013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	0xc014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	0xc023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	0xc024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
	0xc027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	0xc028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
	0xc02b: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	0xc02c: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	0xc02f: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	0xc030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	0xc050: "TLS_RSA_WITH_ARIA_128_GCM_SHA256",
	0xc051: "TLS_RSA_WITH_ARIA_256_GCM_SHA384",
	0xc052: "TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256",
	0xc053: "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384",
	0xc056: "TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256",
	0xc057: "TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384",
	0xc05c: "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256",
	0xc05d: "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384",
	0xc060: "TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256",
	0xc061: "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384",
	0xc09c: "TLS_RSA_WITH_AES_128_CCM",
	0xc09d: "TLS_RSA_WITH_AES_256_CCM",
	0xc09e: "TLS_DHE_RSA_WITH_AES_128_CCM",
	0xc09f: "TLS_DHE_RSA_WITH_AES_256_CCM",
	0xc0a0: "TLS_RSA_WITH_AES_128_CCM_8",
	0xc0a1: "TLS_RSA_WITH_AES_256_CCM_8",
	0xc0a2: "TLS_DHE_RSA_WITH_AES_128_CCM_8",
	0xc0a3: "TLS_DHE_RSA_WITH_AES_256_CCM_8",
	0xc0ac: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
	0xc0ad: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
	0xc0ae: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
	0xc0af: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
	0xcca8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	0xcca9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	0xccaa: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

// TLS Supported Groups registry.
var groupNames = map[uint16]string{
	0x0001: "sect163k1",
	0x0002: "sect163r1",
	0x0003: "sect163r2",
	0x0004: "sect193r1",
	0x0005: "sect193r2",
	0x0006: "sect233k1",
	0x0007: "sect233r1",
	0x0008: "sect239k1",
	0x0009: "sect283k1",
	0x000a: "sect283r1",
	0x000b: "sect409k1",
	0x000c: "sect409r1",
	0x000d: "sect571k1",
	0x000e: "sect571r1",
	0x000f: "secp160k1",
	0x0010: "secp160r1",
	0x0011: "secp160r2",
	0x0012: "secp192k1",
	0x0013: "secp192r1",
	0x0014: "secp224k1",
	0x0015: "secp224r1",
	0x0016: "secp256k1",
	0x0017: "secp256r1",
	0x0018: "secp384r1",
	0x0019: "secp521r1",
	0x001a: "brainpoolP256r1",
	0x001b: "brainpoolP384r1",
	0x001c: "brainpoolP512r1",
	0x001d: "x25519",
	0x001e: "x448",
	0x001f: "brainpoolP256r1tls13",
	0x0020: "brainpoolP384r1tls13",
	0x0021: "brainpoolP512r1tls13",
	0x0022: "GC256A",
	0x0023: "GC256B",
	0x0024: "GC256C",
	0x0025: "GC256D",
	0x0026: "GC512A",
	0x0027: "GC512B",
	0x0028: "GC512C",
	0x0029: "curveSM2",
	0x0100: "ffdhe2048",
	0x0101: "ffdhe3072",
	0x0102: "ffdhe4096",
	0x0103: "ffdhe6144",
	0x0104: "ffdhe8192",
	0x0200: "MLKEM512",
	0x0201: "MLKEM768",
	0x0202: "MLKEM1024",
	0x11eb: "SecP256r1MLKEM768",
	0x11ec: "X25519MLKEM768",
	0x11ed: "SecP384r1MLKEM1024",
	0x6399: "X25519Kyber768Draft00",
	0x639a: "SecP256r1Kyber768Draft00",
	0xff01: "arbitrary_explicit_prime_curves",
	0xff02: "arbitrary_explicit_char2_curves",
}

// TLS SignatureScheme registry, then the TLS 1.2 hash and signature pairs
// (RFC 5246, Section 7.4.1.4.1) that RFC 8446 leaves reserved, named after
// the others.
var signatureSchemeNames = map[uint16]string{
	0x0201: "rsa_pkcs1_sha1",
	0x0203: "ecdsa_sha1",
	0x0401: "rsa_pkcs1_sha256",
	0x0403: "ecdsa_secp256r1_sha256",
	0x0420: "rsa_pkcs1_sha256_legacy",
	0x0501: "rsa_pkcs1_sha384",
	0x0503: "ecdsa_secp384r1_sha384",
	0x0520: "rsa_pkcs1_sha384_legacy",
	0x0601: "rsa_pkcs1_sha512",
	0x0603: "ecdsa_secp521r1_sha512",
	0x0620: "rsa_pkcs1_sha512_legacy",
	0x0704: "eccsi_sha256",
	0x0705: "iso_ibs1",
	0x0706: "iso_ibs2",
	0x0707: "iso_chinese_ibs",
	0x0708: "sm2sig_sm3",
	0x0709: "gostr34102012_256a",
	0x070a: "gostr34102012_256b",
	0x070b: "gostr34102012_256c",
	0x070c: "gostr34102012_256d",
	0x070d: "gostr34102012_512a",
	0x070e: "gostr34102012_512b",
	0x070f: "gostr34102012_512c",
	0x0804: "rsa_pss_rsae_sha256",
	0x0805: "rsa_pss_rsae_sha384",
	0x0806: "rsa_pss_rsae_sha512",
	0x0807: "ed25519",
	0x0808: "ed448",
	0x0809: "rsa_pss_pss_sha256",
	0x080a: "rsa_pss_pss_sha384",
	0x080b: "rsa_pss_pss_sha512",
	0x081a: "ecdsa_brainpoolP256r1tls13_sha256",
	0x081b: "ecdsa_brainpoolP384r1tls13_sha384",
	0x081c: "ecdsa_brainpoolP512r1tls13_sha512",
	0x0904: "mldsa44",
	0x0905: "mldsa65",
	0x0906: "mldsa87",

	0x0202: "dsa_sha1",
	0x0301: "rsa_sha224",
	0x0302: "dsa_sha224",
	0x0303: "ecdsa_sha224",
	0x0402: "dsa_sha256",
	0x0502: "dsa_sha384",
	0x0602: "dsa_sha512",
}

// TLS ExtensionType Values registry, then tls_flags under the experimental
// codepoint this project's clients use, and extensions browsers send under
// unregistered codepoints.
var extensionNames = map[uint16]string{
	0:      "server_name",
	1:      "max_fragment_length",
	2:      "client_certificate_url",
	3:      "trusted_ca_keys",
	4:      "truncated_hmac",
	5:      "status_request",
	6:      "user_mapping",
	7:      "client_authz",
	8:      "server_authz",
	9:      "cert_type",
	10:     "supported_groups",
	11:     "ec_point_formats",
	12:     "srp",
	13:     "signature_algorithms",
	14:     "use_srtp",
	15:     "heartbeat",
	16:     "application_layer_protocol_negotiation",
	17:     "status_request_v2",
	18:     "signed_certificate_timestamp",
	19:     "client_certificate_type",
	20:     "server_certificate_type",
	21:     "padding",
	22:     "encrypt_then_mac",
	23:     "extended_main_secret",
	24:     "token_binding",
	25:     "cached_info",
	26:     "tls_lts",
	27:     "compress_certificate",
	28:     "record_size_limit",
	29:     "pwd_protect",
	30:     "pwd_clear",
	31:     "password_salt",
	32:     "ticket_pinning",
	33:     "tls_cert_with_extern_psk",
	34:     "delegated_credential",
	35:     "session_ticket",
	36:     "TLMSP",
	37:     "TLMSP_proxying",
	38:     "TLMSP_delegate",
	39:     "supported_ekt_ciphers",
	41:     "pre_shared_key",
	42:     "early_data",
	43:     "supported_versions",
	44:     "cookie",
	45:     "psk_key_exchange_modes",
	47:     "certificate_authorities",
	48:     "oid_filters",
	49:     "post_handshake_auth",
	50:     "signature_algorithms_cert",
	51:     "key_share",
	52:     "transparency_info",
	53:     "connection_id (deprecated)",
	54:     "connection_id",
	55:     "external_id_hash",
	56:     "external_session_id",
	57:     "quic_transport_parameters",
	58:     "ticket_request",
	59:     "dnssec_chain",
	60:     "sequence_number_encryption_algorithms",
	61:     "rrc",
	62:     "tls_flags",
	0xfd00: "ech_outer_extensions",
	0xfe0d: "encrypted_client_hello",
	0xff01: "renegotiation_info",

	0xfe01: "tls_flags",                 // experimental codepoint (draft-ietf-tls-tlsflags)
	0x3374: "next_protocol_negotiation", // NPN, never registered
	0x4469: "application_settings",      // ALPS, Chrome's first codepoint
	0x44cd: "application_settings",      // ALPS, Chrome's current codepoint
}

// TLS and DTLS protocol versions (RFC 8446, Section 4.2.1; RFC 9147).
var versionNames = map[uint16]string{
	0x0002: "SSL 2.0",
	0x0300: "SSL 3.0",
	0x0301: "TLS 1.0",
	0x0302: "TLS 1.1",
	0x0303: "TLS 1.2",
	0x0304: "TLS 1.3",
	0xfeff: "DTLS 1.0",
	0xfefd: "DTLS 1.2",
	0xfefc: "DTLS 1.3",
}

// CipherSuiteName returns the IANA name of a cipher suite.
func CipherSuiteName(id uint16) string { return lookup(cipherSuiteNames, id) }

// GroupName returns the IANA name of a supported group (named curve or key
// exchange method), as used in supported_groups and key_share.
func GroupName(id uint16) string { return lookup(groupNames, id) }

// SignatureSchemeName returns the IANA name of a signature scheme.
func SignatureSchemeName(id uint16) string { return lookup(signatureSchemeNames, id) }

// ExtensionName returns the IANA name of a TLS extension.
func ExtensionName(id uint16) string { return lookup(extensionNames, id) }

// VersionName returns a protocol version as "TLS 1.3", "TLS 1.2" and so on.
func VersionName(v uint16) string { return lookup(versionNames, v) }

// isGREASE reports whether v is one of the 16-bit GREASE values of RFC 8701,
// Section 2: 0x0a0a, 0x1a1a, ..., 0xfafa.
func isGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

func lookup(table map[uint16]string, v uint16) string {
	if isGREASE(v) {
		return "GREASE"
	}
	if name, ok := table[v]; ok {
		return name
	}
	return hexName(v)
}

// hexName returns v as "0x" and four lowercase hex digits.
func hexName(v uint16) string {
	const digits = "0123456789abcdef"
	return string([]byte{'0', 'x', digits[v>>12], digits[v>>8&0xf], digits[v>>4&0xf], digits[v&0xf]})
}

// nameList maps a list of codepoints to their names; nil stays nil.
func nameList(list []uint16, name func(uint16) string) []string {
	if list == nil {
		return nil
	}
	out := make([]string, len(list))
	for i, v := range list {
		out[i] = name(v)
	}
	return out
}

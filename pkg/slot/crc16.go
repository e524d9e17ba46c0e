package slot

import (
	"bytes"
	"strings"
)

// Count is the number of hash slots. Valid slots are 0 through Count-1.
const Count = 16384

// MaxSlot is the highest valid slot number.
const MaxSlot = Count - 1

// crcTable is the byte-wise lookup table for CRC-16/XMODEM (poly 0x1021).
var crcTable = makeCRCTable()

func makeCRCTable() *[256]uint16 {
	var t [256]uint16
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return &t
}

// CRC16 returns the CRC-16/XMODEM checksum of b as used by Redis Cluster:
// polynomial 0x1021, initial value 0, input and output not reflected, no
// final XOR. CRC16([]byte("123456789")) == 0x31C3.
func CRC16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^c]
	}
	return crc
}

func crc16String(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}

// HashTag returns the part of key that is hashed to pick its slot, following
// the Redis Cluster hash tag rules: if key contains a '{', and a '}' occurs
// after the first '{' with at least one byte between them, the result is the
// bytes between the first '{' and the first '}' after it. Otherwise the
// result is the whole key. Examples:
//
//	"{user1000}.following" -> "user1000"
//	"foo{bar}{zap}"        -> "bar"
//	"foo{{bar}}zap"        -> "{bar"
//	"foo{}{bar}"           -> "foo{}{bar}" (empty first tag: whole key)
//	"foo"                  -> "foo"
//
// The result aliases key; it is not a copy.
func HashTag(key []byte) []byte {
	open := bytes.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	closing := bytes.IndexByte(key[open+1:], '}')
	if closing <= 0 { // no '}' or empty tag "{}"
		return key
	}
	return key[open+1 : open+1+closing]
}

func hashTagString(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	closing := strings.IndexByte(key[open+1:], '}')
	if closing <= 0 {
		return key
	}
	return key[open+1 : open+1+closing]
}

// Of returns the hash slot of key: CRC16(HashTag(key)) mod Count. It matches
// Redis Cluster's CLUSTER KEYSLOT.
func Of(key []byte) uint16 {
	return CRC16(HashTag(key)) % Count
}

// OfString is like [Of] for a string key; it does not allocate.
func OfString(key string) uint16 {
	return crc16String(hashTagString(key)) % Count
}

package slot_test

import (
	"errors"
	"fmt"

	"github.com/slotkv/slotkv/pkg/slot"
)

func ExampleOf() {
	fmt.Println(slot.Of([]byte("foo")))
	fmt.Println(slot.OfString("{user1000}.following") == slot.OfString("{user1000}.followers"))
	// Output:
	// 12182
	// true
}

func ExampleHashTag() {
	for _, k := range []string{"{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}"} {
		fmt.Printf("%s -> %s\n", k, slot.HashTag([]byte(k)))
	}
	// Output:
	// {user1000}.following -> user1000
	// foo{}{bar} -> foo{}{bar}
	// foo{{bar}}zap -> {bar
	// foo{bar}{zap} -> bar
}

func ExampleParseRangeSet() {
	rs, err := slot.ParseRangeSet("200-300, 0-100, 101-150, 400")
	fmt.Println(rs, rs.Len(), err)
	fmt.Println(rs.Contains(120), rs.Contains(160))

	_, err = slot.ParseRangeSet("0-100,50-60")
	fmt.Println(err)
	fmt.Println(errors.Is(err, slot.ErrOverlap))
	// Output:
	// 0-150,200-300,400 253 <nil>
	// true false
	// slot: overlapping ranges: "0-100,50-60": range 50-60 overlaps 0-100
	// true
}

func ExampleParseRange() {
	r, _ := slot.ParseRange("0-5460")
	fmt.Println(r.Start, r.End, r.Len())
	_, err := slot.ParseRange("300-200")
	fmt.Println(err)
	// Output:
	// 0 5460 5461
	// slot: reversed range: "300-200": start 300 is after end 200
}

func ExampleRangeSet_Intersect() {
	jobA := slot.MustParseRangeSet("0-1000")
	jobB := slot.MustParseRangeSet("900-2000,5000")
	fmt.Println(jobA.Overlaps(jobB), jobA.Intersect(jobB))
	fmt.Println(jobA.Union(jobB), jobB.Subtract(jobA))
	// Output:
	// true 900-1000
	// 0-2000,5000 1001-2000,5000
}

func ExampleRangeSet_Split() {
	rs := slot.MustParseRangeSet("0-9,100-109")
	for _, piece := range rs.Split(3) {
		fmt.Println(piece, piece.Len())
	}
	// Output:
	// 0-6 7
	// 7-9,100-102 6
	// 103-109 7
}

func ExampleEven() {
	for _, rs := range slot.Even(3) {
		fmt.Println(rs)
	}
	// Output:
	// 0-5460
	// 5461-10922
	// 10923-16383
}

func ExampleAppendKey() {
	key := []byte("foo")
	k := slot.AppendKey(nil, slot.Of(key), key)
	fmt.Printf("%q\n", k)

	s, user, err := slot.SplitKey(k)
	fmt.Println(s, string(user), err)

	lo, hi := slot.Range{Start: 0, End: 5460}.KeyBounds()
	fmt.Printf("[%x, %x)\n", lo, hi)
	// Output:
	// "/\x96foo"
	// 12182 foo <nil>
	// [0000, 1555)
}

package wire

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

// A present-but-empty embedded message (what a proto3 encoder writes for Duration{0}) must decode
// as present, like upstream's message-typed field; absent must decode as nil.
func TestOptionalBytesPresence(t *testing.T) {
	var o NodeGroupAutoscalingOptions
	if err := proto.Unmarshal([]byte{0x1a, 0x00}, &o); err != nil {
		t.Fatal(err)
	}
	if o.ScaleDownUnneededTime == nil {
		t.Fatalf("present empty field 3 decoded as absent")
	}
	var empty NodeGroupAutoscalingOptions
	if err := proto.Unmarshal(nil, &empty); err != nil {
		t.Fatal(err)
	}
	if empty.ScaleDownUnneededTime != nil {
		t.Fatalf("absent field 3 decoded as present")
	}
}

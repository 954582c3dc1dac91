package wmtransport

import (
	"bytes"
	"image"
	"image/png"
	"testing"
)

func TestQRPNG(t *testing.T) {
	code := "2@9kq1L0xQ3Zx8w==,bZ1kFQ3b5vO3xg==,Vw0oH0pM7n1V9Q==,aGVsbG8="
	b, err := QRPNG(code, 256)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("QRPNG output is not a PNG: %v", err)
	}
	if got := img.Bounds(); got != image.Rect(0, 0, 256, 256) {
		t.Fatalf("image bounds %v, want 256x256", got)
	}
	dark, light := 0, 0
	for y := 0; y < 256; y++ {
		for x := 0; x < 256; x++ {
			if r, _, _, _ := img.At(x, y).RGBA(); r < 0x8000 {
				dark++
			} else {
				light++
			}
		}
	}
	if dark < 256*256/5 || light < 256*256/5 {
		t.Fatalf("%d dark and %d light pixels: not a QR code", dark, light)
	}
	other, err := QRPNG(code+"x", 256)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(b, other) {
		t.Fatal("different codes rendered to the same image")
	}
	for _, bad := range []struct {
		code string
		size int
	}{{"", 256}, {code, 10}, {code, 10000}} {
		if _, err := QRPNG(bad.code, bad.size); err == nil {
			t.Errorf("QRPNG(%q, %d) succeeded", bad.code, bad.size)
		}
	}
}

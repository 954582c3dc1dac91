package wmtransport

import (
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// QRPNG renders a QR code string from PairQR (or a QRCode event) as a PNG image of size×size
// pixels, for the API to show. Medium error correction, as WhatsApp's own web client uses.
func QRPNG(code string, size int) ([]byte, error) {
	if code == "" {
		return nil, fmt.Errorf("wmtransport: empty QR code")
	}
	if size < 64 || size > 4096 {
		return nil, fmt.Errorf("wmtransport: QR image size %d outside 64..4096", size)
	}
	png, err := qrcode.Encode(code, qrcode.Medium, size)
	if err != nil {
		return nil, fmt.Errorf("wmtransport: render QR code: %w", err)
	}
	return png, nil
}

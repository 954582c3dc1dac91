// Package docs embeds waqueue's API documents so that the server can serve them.
package docs

import _ "embed"

// OpenAPI is the OpenAPI 3 document of the HTTP API (openapi.yaml), served at
// GET /v1/openapi.yaml. It is tested against the API's route table (adapters/httpapi).
//
//go:embed openapi.yaml
var OpenAPI []byte

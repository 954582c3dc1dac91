// Package docs embeds waqueue's API documents so that the server can serve them.
package docs

import _ "embed"

// OpenAPI is the OpenAPI 3 document of the HTTP API (openapi.yaml), served at
// GET /v1/openapi.yaml. It is tested against the API's route table (adapters/httpapi).
//
//go:embed openapi.yaml
var OpenAPI []byte

// ReferencePage is the API reference page served at GET /docs: Redoc rendering the OpenAPI
// document. It loads only same-origin resources, by relative URLs (so it works behind a path
// prefix): docs/redoc.standalone.js and v1/openapi.yaml, and has no inline script.
//
//go:embed reference.html
var ReferencePage []byte

// RedocJS is the vendored, pinned Redoc standalone bundle (vendor/redoc, see its README),
// served at GET /docs/redoc.standalone.js.
//
//go:embed vendor/redoc/redoc.standalone.js
var RedocJS []byte

// Package gen holds the code generated from proto/ by `make proto`; this
// file, written by hand, hands the generated OpenAPI documents to the
// services, which serve them at /openapi.json (pkg/server). It lives here,
// next to gen/openapi/, because go:embed reaches only files below the
// embedding package's directory, and `make proto` removes and rewrites
// gen/openapi/ and gen/slotkv/ but not this file.
package gen

import _ "embed"

// The OpenAPI (Swagger 2.0) document of each service's REST API, as
// protoc-gen-openapiv2 wrote it.
var (
	//go:embed openapi/slotkv/storage/v1/storage.swagger.json
	StorageOpenAPI []byte
	//go:embed openapi/slotkv/router/v1/router.swagger.json
	RouterOpenAPI []byte
	//go:embed openapi/slotkv/migrator/v1/migrator.swagger.json
	MigratorOpenAPI []byte
	//go:embed openapi/slotkv/downloader/v1/downloader.swagger.json
	DownloaderOpenAPI []byte
)

module github.com/slotkv/slotkv/cmd/slotkv-dataset

go 1.26.7

require github.com/slotkv/slotkv/pkg v0.0.0

replace (
	github.com/slotkv/slotkv/gen => ../../gen
	github.com/slotkv/slotkv/pkg => ../../pkg
)

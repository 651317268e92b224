module github.com/codat-rotator/codat-rotator/secret

go 1.26.0

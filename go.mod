module github.com/codat-rotator/codat-rotator

go 1.26

require github.com/lmittmann/tint v1.2.1

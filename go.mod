module github.com/purplerain/mesh-operator

go 1.26.0

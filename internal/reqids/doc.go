// Package reqids holds the test that keeps hisp's requirement citations
// resolvable: every id such as CD-08 or DN-03 cited in the code must be
// defined in docs/requirements.md, so that grep of an id lands on its
// meaning and source.
package reqids

package engines

// Images for a container runtime with no registry to pull from: an OCI
// image layout, written to a tar that `ctr images import` reads.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// ociImage is an image of one layer.
type ociImage struct {
	name       string // the reference, "localhost/NAME:TAG"
	root       string // the directory that is the layer
	entrypoint []string
	cmd        []string
	env        []string
}

// ociBlob is one content-addressed file of the layout.
type ociBlob struct {
	mediaType string
	data      []byte
}

// descriptor is the OCI descriptor of b.
func (b ociBlob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

func (b ociBlob) digest() string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(b.data))
}

// writeOCIArchive writes img as an OCI image layout in a tar file at path:
// the layer uncompressed, its configuration, a manifest, and an index.json
// whose annotations name the image as containerd and the OCI spec read it.
func writeOCIArchive(ctx context.Context, img ociImage, path string) error {
	layer, err := exec.CommandContext(ctx, "tar", "-c", "--numeric-owner", "-C", img.root, ".").Output()
	if err != nil {
		return fmt.Errorf("tar of %s: %w", img.root, err)
	}
	layerBlob := ociBlob{"application/vnd.oci.image.layer.v1.tar", layer}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": img.entrypoint, "Cmd": img.cmd, "Env": img.env},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerBlob.digest()}},
	})
	if err != nil {
		return err
	}
	configBlob := ociBlob{"application/vnd.oci.image.config.v1+json", config}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": configBlob.descriptor(), "layers": []any{layerBlob.descriptor()},
	})
	if err != nil {
		return err
	}
	manifestBlob := ociBlob{"application/vnd.oci.image.manifest.v1+json", manifest}
	ref := manifestBlob.descriptor()
	ref["annotations"] = map[string]string{"io.containerd.image.name": img.name,
		"org.opencontainers.image.ref.name": img.name[strings.LastIndex(img.name, ":")+1:]}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{ref},
	})
	if err != nil {
		return err
	}
	files := map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`), "index.json": index}
	for _, b := range []ociBlob{layerBlob, configBlob, manifestBlob} {
		files["blobs/sha256/"+strings.TrimPrefix(b.digest(), "sha256:")] = b.data
	}
	return writeTar(path, files)
}

// writeTar writes files, by name, to a new tar file at path.
func writeTar(path string, files map[string][]byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: now}); err != nil {
			return err
		}
	}
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

package framework

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TokenKubeconfig writes, in a new directory under dir, the kubeconfig at kubeconfig with every
// user's credentials replaced by token (a ServiceAccount's, to run the binary as it), and returns
// its path.
func TokenKubeconfig(t *testing.T, kubeconfig, dir, token string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	require.NoError(t, err)
	for name := range kc.AuthInfos {
		kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	}
	sub, err := os.MkdirTemp(dir, "kubeconfig-")
	require.NoError(t, err)
	path := filepath.Join(sub, "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}
